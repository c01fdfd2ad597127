//! Sending bulk requests: one batch at a time, to the current endpoint, until every document
//! of the batch is delivered, refused or given up (see the module docs of the sink for the
//! rules). [`Sender::flush`] owns the sender and the batch while it runs and hands both back,
//! so the sink can encode the next batch meanwhile.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weir_pipeline::event::Event;
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::retry::Backoff;

use super::bulk::{parse_response, BulkAction, ItemOutcome};
use super::{parse_root, ClusterVersion};
use crate::http::{gzip, retriable_status, retry_after, snippet};

pub(super) enum Auth {
    None,
    Basic(String, Option<String>),
    ApiKey(String),
}

/// One document of a batch: its event (finalized when its fate is known) and its two lines
/// in the body.
pub(super) struct Item {
    pub event: Event,
    pub range: Range<usize>,
}

/// Documents encoded into one NDJSON body.
#[derive(Default)]
pub(super) struct Batch {
    pub body: Vec<u8>,
    pub items: Vec<Item>,
}

/// How one request went.
enum Sent {
    /// A bulk response, one outcome per document.
    Items(Vec<ItemOutcome>),
    /// Try the whole request again (connection error, 429, 5xx, unusable response).
    Retry(String, Option<Duration>),
    /// The whole request was refused (400, 401, 413...): the reason.
    Refused(u16, String),
}

/// The HTTP side of the sink: endpoints, authentication, retries, dead letters.
pub(super) struct Sender {
    pub client: reqwest::Client,
    pub endpoints: Vec<String>,
    /// `<endpoint>/_bulk?filter_path=…[&pipeline=…]`, per endpoint.
    pub bulk_url: Vec<String>,
    /// The endpoint in use; the next one after a failure.
    pub current: usize,
    pub auth: Auth,
    pub headers: reqwest::header::HeaderMap,
    pub gzip: bool,
    /// `create`: a 409 means an earlier attempt stored the document.
    pub action: BulkAction,
    pub backoff: (Duration, Duration),
    pub max_retries: Option<u32>,
    pub dead_letter: Option<File>,
    pub metrics: Arc<ComponentMetrics>,
}

impl Sender {
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self
            .client
            .request(method, url)
            .headers(self.headers.clone());
        match &self.auth {
            Auth::None => r,
            Auth::Basic(u, p) => r.basic_auth(u, p.as_ref()),
            Auth::ApiKey(k) => r.header(reqwest::header::AUTHORIZATION, format!("ApiKey {k}")),
        }
    }

    /// `GET /` on each endpoint until one answers; that one becomes the current endpoint.
    pub async fn healthcheck(&mut self) -> Result<ClusterVersion, String> {
        let mut errors = Vec::new();
        for i in 0..self.endpoints.len() {
            let idx = (self.current + i) % self.endpoints.len();
            let url = format!("{}/", self.endpoints[idx]);
            let res = self
                .request(reqwest::Method::GET, &url)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {
                    let body = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
                    self.current = idx;
                    return parse_root(&body).map_err(|e| format!("{url}: {e}"));
                }
                Ok(r) => errors.push(format!("{url}: HTTP {}", r.status())),
                Err(e) => errors.push(format!("{url}: {}", error_chain(&e))),
            }
        }
        Err(errors.join("; "))
    }

    /// Sends one body (`count` documents) to the current endpoint.
    async fn send(&mut self, body: &Bytes, count: usize) -> Sent {
        let url = self.bulk_url[self.current].clone();
        // Without compression the body goes out as it is (a reference, not a copy).
        let payload = if self.gzip {
            Bytes::from(gzip(body))
        } else {
            body.clone()
        };
        let mut req = self
            .request(reqwest::Method::POST, &url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson");
        if self.gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let len = payload.len() as u64;
        let resp = match req.body(payload).send().await {
            Ok(r) => r,
            Err(e) => {
                self.rotate();
                return Sent::Retry(format!("POST {url}: {}", error_chain(&e)), None);
            }
        };
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers(), self.backoff.1);
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                self.rotate();
                return Sent::Retry(
                    format!("POST {url}: reading the response: {}", error_chain(&e)),
                    None,
                );
            }
        };
        self.metrics.add_sent_bytes(len);
        if (200..300).contains(&status) {
            return match parse_response(&body, count, self.action == BulkAction::Create) {
                Ok(o) => Sent::Items(o),
                Err(e) => {
                    self.metrics.error(
                        "bulk_response",
                        1,
                        &format_args!("POST {url}: {e}; the documents will be sent again"),
                    );
                    Sent::Retry(format!("POST {url}: unusable bulk response"), None)
                }
            };
        }
        let msg = format!("POST {url}: HTTP {status}: {}", snippet(&body, 300));
        if retriable_status(status) {
            self.rotate();
            Sent::Retry(msg, after)
        } else {
            Sent::Refused(status, msg)
        }
    }

    fn rotate(&mut self) {
        self.current = (self.current + 1) % self.endpoints.len();
    }

    /// Writes a refused document to the dead-letter file.
    fn dead_letter(&mut self, status: u16, reason: &str, lines: &[u8]) {
        let Some(f) = &mut self.dead_letter else {
            return;
        };
        let lines = lines.strip_suffix(b"\n").unwrap_or(lines);
        let (action, doc) = match memchr::memchr(b'\n', lines) {
            Some(i) => (&lines[..i], &lines[i + 1..]),
            None => (lines, &b"null"[..]),
        };
        let mut out = Vec::with_capacity(lines.len() + reason.len() + 64);
        out.extend_from_slice(b"{\"status\":");
        out.extend_from_slice(status.to_string().as_bytes());
        out.extend_from_slice(b",\"reason\":");
        let _ = serde_json::to_writer(&mut out, reason);
        out.extend_from_slice(b",\"action\":");
        out.extend_from_slice(action);
        out.extend_from_slice(b",\"document\":");
        out.extend_from_slice(doc);
        out.extend_from_slice(b"}\n");
        if let Err(e) = f.write_all(&out) {
            self.metrics.error(
                "dead_letter",
                1,
                &format_args!("cannot write to the dead-letter file: {e}"),
            );
        }
    }

    pub fn flush_dead_letters(&mut self) {
        if let Some(f) = &mut self.dead_letter {
            let _ = f.flush();
        }
    }

    /// Sends `batch` until each document is delivered, refused or given up, and finalizes
    /// each event accordingly. Returns the sender and the emptied batch (its buffers are
    /// reused for a later batch).
    pub async fn flush(mut self, batch: Batch) -> (Sender, Batch) {
        let Batch { body, mut items } = batch;
        // The body is handed to the HTTP client as `Bytes` (no copy); once the request is
        // done nothing else holds it, and its allocation comes back below.
        let mut body = Bytes::from(body);
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        let mut attempts = 0u32;
        while !items.is_empty() {
            attempts += 1;
            let outcome = self.send(&body, items.len()).await;
            let give_up = self.max_retries.is_some_and(|m| attempts > m);
            let delay = match outcome {
                Sent::Items(outcomes) => {
                    let mut keep = Vec::new();
                    let mut delivered = 0u64;
                    let mut retry_reason = None;
                    for (item, o) in items.drain(..).zip(outcomes) {
                        match o {
                            ItemOutcome::Ok => delivered += 1,
                            ItemOutcome::Retry(r) if !give_up => {
                                retry_reason.get_or_insert(r);
                                keep.push(item);
                            }
                            ItemOutcome::Retry(r) => {
                                self.give_up(&item, &body, &r, attempts);
                            }
                            ItemOutcome::Rejected { status, reason } => {
                                self.metrics.error(
                                    "rejected",
                                    1,
                                    &format_args!(
                                        "document refused (HTTP {status}), not retried: {reason}"
                                    ),
                                );
                                self.dead_letter(status, &reason, &body[item.range.clone()]);
                                item.event.metadata().update_status(EventStatus::Rejected);
                            }
                        }
                    }
                    self.metrics.add_sent(delivered);
                    if keep.is_empty() {
                        break;
                    }
                    self.metrics.add_counter(
                        "elasticsearch_retried_documents_total",
                        None,
                        keep.len() as u64,
                    );
                    self.metrics.error(
                        "retry",
                        1,
                        &format_args!(
                            "{} document(s) refused for now ({}), sending them again",
                            keep.len(),
                            retry_reason.unwrap_or_default()
                        ),
                    );
                    let mut again = Vec::with_capacity(body.len());
                    for it in &mut keep {
                        let start = again.len();
                        again.extend_from_slice(&body[it.range.clone()]);
                        it.range = start..again.len();
                    }
                    body = Bytes::from(again);
                    items = keep;
                    None
                }
                Sent::Retry(msg, after) => {
                    self.metrics
                        .error("request", 1, &format_args!("{msg}; retrying"));
                    if give_up {
                        for it in items.drain(..) {
                            self.give_up(&it, &body, &msg, attempts);
                        }
                        break;
                    }
                    after
                }
                Sent::Refused(status, msg) => {
                    self.metrics.error(
                        "rejected",
                        items.len() as u64,
                        &format_args!("{} document(s) refused: {msg}", items.len()),
                    );
                    for it in items.drain(..) {
                        self.dead_letter(status, &msg, &body[it.range.clone()]);
                        it.event.metadata().update_status(EventStatus::Rejected);
                    }
                    break;
                }
            };
            let d = backoff.next_delay();
            tokio::time::sleep(delay.map_or(d, |a| a.max(d))).await;
        }
        // Takes the allocation back when nothing else holds it (else copies, rarely).
        let mut body = Vec::from(body);
        body.clear();
        (self, Batch { body, items })
    }

    fn give_up(&mut self, item: &Item, body: &[u8], reason: &str, attempts: u32) {
        self.metrics.error(
            "gave_up",
            1,
            &format_args!("giving up on a document after {attempts} attempts: {reason}"),
        );
        self.dead_letter(0, reason, &body[item.range.clone()]);
        item.event.metadata().update_status(EventStatus::Errored);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
