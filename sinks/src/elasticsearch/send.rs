//! Sending bulk requests: a batch to the current endpoint, until every document of the batch
//! is delivered, refused or given up (see the module docs of the sink for the rules).
//! [`Sender::flush`] is shared by the `request.concurrency` batches in flight; it owns its
//! batch while it runs and hands it back emptied, for reuse.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use weir_pipeline::component::SinkOutputs;
use weir_pipeline::config::Secret;
use weir_pipeline::event::{Event, EventBatch, EventMetadata, LogEvent, ObjectMap, Value};
use weir_pipeline::finalization::{EventStatus, Finalizer};
use weir_pipeline::metrics::ComponentMetrics;

use super::bulk::{parse_response, BulkAction, ItemOutcome, Refusal};
use super::EsRequest;
use super::{parse_root, ClusterVersion, DEAD_LETTER_OUTPUT};
use crate::http::{gzip, retry_after, snippet};
use crate::toolkit::request::unless_stopped;
use crate::toolkit::split::Parts;
use crate::toolkit::{FailureReporter, RefusalPolicy, RequestConfig, Retries, Verdict, Wait};
use weir_pipeline::shutdown::ShutdownToken;

/// The longest bulk response read (the per-item results of a batch); longer is an error on
/// that request.
const MAX_BULK_RESPONSE_BYTES: usize = 64 << 20;
/// The longest answer to `GET /` read.
const MAX_ROOT_RESPONSE_BYTES: usize = 1 << 20;

pub(super) enum Auth {
    None,
    Basic(String, Option<Secret>),
    ApiKey(Secret),
}

/// One document of a batch: its two lines in the body, which is all a retry sends, and what
/// is needed to finalize it when its fate is known.
///
/// The event itself is kept only when the `dead_letter` output is read (a dead letter
/// carries its fields); otherwise it is dropped as soon as it is encoded, while it is still
/// in the cache, and only its acknowledgement handle stays.
pub(super) struct Item {
    pub notifier: Option<Finalizer>,
    pub event: Option<Event>,
    pub range: Range<usize>,
}

impl Item {
    /// The item of an event just encoded at `range` of the body.
    pub fn new(mut event: Event, range: Range<usize>, keep_event: bool) -> Item {
        let notifier = event.metadata_mut().notifier.take();
        Item {
            notifier,
            event: keep_event.then_some(event),
            range,
        }
    }

    /// Records the document's outcome and releases its hold on its batch's notifier, if
    /// any. (An item dropped without an outcome counts as errored.)
    fn finalize(&mut self, status: EventStatus) {
        if let Some(n) = self.notifier.take() {
            n.finalize(status);
        }
    }
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
    /// Try the whole request again (connection error, 401, 403, 404, 429, 5xx, unusable
    /// response: the refusal policy's retries).
    Retry(String, Option<Duration>),
    /// The request is too large (413): send its halves.
    TooLarge(String),
    /// The whole request was refused (400...): the server's error, and a message naming the
    /// request.
    Refused(Refusal, String),
}

/// How [`Sender::flush_part`] ended.
enum PartEnd {
    /// Every document of the part is settled; its emptied items, for reuse.
    Done(Vec<Item>),
    /// Refused as too large: split it.
    TooLarge(Part, String),
    /// The sink was told to stop: these documents are not settled.
    Stopped(Vec<Item>),
}

/// Documents to send in one request: their lines, and the documents (whose ranges are in
/// these lines).
type Part = (Bytes, Vec<Item>);

/// The halves of a part of two documents or more (the lines of each half are a slice of
/// the part's, not a copy).
fn halve(part: Part) -> Result<(Part, Part), Part> {
    let (body, mut items) = part;
    if items.len() < 2 {
        return Err((body, items));
    }
    let mut second = items.split_off(items.len() / 2);
    let start = items.first().map_or(0, |i| i.range.start);
    let cut = second.first().map_or(body.len(), |i| i.range.start);
    let end = second.last().map_or(body.len(), |i| i.range.end);
    for it in &mut items {
        it.range = it.range.start - start..it.range.end - start;
    }
    for it in &mut second {
        it.range = it.range.start - cut..it.range.end - cut;
    }
    Ok((
        (body.slice(start..cut), items),
        (body.slice(cut..end), second),
    ))
}

/// The HTTP side of the sink: endpoints, authentication, retries, dead letters.
pub(super) struct Sender {
    pub client: reqwest::Client,
    pub endpoints: Vec<String>,
    /// `<endpoint>/_bulk?filter_path=…[&pipeline=…]`, per endpoint.
    pub bulk_url: Vec<String>,
    /// The endpoint in use; the next one after a failure.
    pub current: AtomicUsize,
    pub auth: Auth,
    pub headers: reqwest::header::HeaderMap,
    pub gzip: bool,
    /// `create`: a 409 means an earlier attempt stored the document.
    pub action: BulkAction,
    pub request: RequestConfig<EsRequest>,
    pub dead_letter: Mutex<Option<File>>,
    /// The `dead_letter` output.
    pub outputs: tokio::sync::Mutex<SinkOutputs>,
    /// Whether something reads the `dead_letter` output.
    pub dead_letter_connected: bool,
    /// The sink's id, named in the dead letters.
    pub id: Arc<str>,
    pub metrics: Arc<ComponentMetrics>,
    /// What answers mean (`request.retry_statuses`, `request.reject_statuses`).
    pub policy: RefusalPolicy,
    /// Says that requests fail, at most once a period, shared by the requests in flight.
    pub reporter: FailureReporter,
    /// Fires when the sink must give up at once.
    pub stop: ShutdownToken,
}

impl Sender {
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self
            .client
            .request(method, url)
            .headers(self.headers.clone());
        match &self.auth {
            Auth::None => r,
            Auth::Basic(u, p) => r.basic_auth(u, p.as_ref().map(Secret::expose)),
            Auth::ApiKey(k) => r.header(
                reqwest::header::AUTHORIZATION,
                format!("ApiKey {}", k.expose()),
            ),
        }
    }

    /// `GET /` on each endpoint until one answers; that one becomes the current endpoint.
    pub async fn healthcheck(&mut self) -> Result<ClusterVersion, String> {
        let mut errors = Vec::new();
        let current = self.current.load(Ordering::Relaxed);
        for i in 0..self.endpoints.len() {
            let idx = (current + i) % self.endpoints.len();
            let url = format!("{}/", self.endpoints[idx]);
            let res = self
                .request(reqwest::Method::GET, &url)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {
                    let body = weir_connect::http::read_capped(r, MAX_ROOT_RESPONSE_BYTES)
                        .await
                        .map_err(|e| format!("{url}: {e}"))?;
                    self.current.store(idx, Ordering::Relaxed);
                    return parse_root(&body).map_err(|e| format!("{url}: {e}"));
                }
                Ok(r) => errors.push(format!("{url}: HTTP {}", r.status())),
                Err(e) => errors.push(format!("{url}: {}", error_chain(&e))),
            }
        }
        Err(errors.join("; "))
    }

    /// Sends one body (`count` documents) to the current endpoint.
    async fn send(&self, body: &Bytes, count: usize) -> Sent {
        let url = self.bulk_url[self.current.load(Ordering::Relaxed) % self.bulk_url.len()].clone();
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
        let started = std::time::Instant::now();
        let resp = match req.body(payload).send().await {
            Ok(r) => r,
            Err(e) => {
                self.rotate();
                return Sent::Retry(format!("POST {url}: {}", error_chain(&e)), None);
            }
        };
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers(), self.request.max_backoff());
        let body = match weir_connect::http::read_capped(resp, MAX_BULK_RESPONSE_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                self.rotate();
                return Sent::Retry(format!("POST {url}: reading the response: {e}"), None);
            }
        };
        self.metrics.add_sent_bytes(len);
        tracing::debug!(
            component = %self.id,
            documents = count,
            bytes = len,
            status,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "bulk request answered"
        );
        if (200..300).contains(&status) {
            return match parse_response(
                &body,
                count,
                self.action == BulkAction::Create,
                &self.policy,
            ) {
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
        match self.policy.http(status) {
            Verdict::Retry => {
                self.rotate();
                Sent::Retry(msg, after)
            }
            Verdict::Split => Sent::TooLarge(msg),
            Verdict::Reject => Sent::Refused(Refusal::of_request(status, &body, &msg), msg),
        }
    }

    fn rotate(&self) {
        let n = self.endpoints.len().max(1);
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some((c + 1) % n));
    }

    /// Writes a refused document to the dead-letter file (with `file_reason`), and queues a
    /// copy of its event for the `dead_letter` output when something reads it.
    fn dead_letter(
        &self,
        refusal: &Refusal,
        file_reason: &str,
        item: &Item,
        body: &[u8],
        out: &mut Vec<Event>,
    ) {
        let lines = &body[item.range.clone()];
        let lines = lines.strip_suffix(b"\n").unwrap_or(lines);
        let (action, doc) = match memchr::memchr(b'\n', lines) {
            Some(i) => (&lines[..i], &lines[i + 1..]),
            None => (lines, &b"null"[..]),
        };
        if let Some(event) = &item.event {
            if self.dead_letter_connected {
                out.push(dead_letter_event(event, refusal, action, &self.id));
            }
        }
        let mut file = self
            .dead_letter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(f) = file.as_mut() else {
            return;
        };
        let mut out = Vec::with_capacity(lines.len() + file_reason.len() + 64);
        out.extend_from_slice(b"{\"status\":");
        out.extend_from_slice(refusal.status.to_string().as_bytes());
        out.extend_from_slice(b",\"reason\":");
        let _ = serde_json::to_writer(&mut out, file_reason);
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

    /// Sends the queued dead letters to the `dead_letter` output, waiting while its
    /// consumers are full (backpressure: the sink takes no more input meanwhile).
    async fn send_dead_letters(&self, queued: &mut Vec<Event>) {
        if queued.is_empty() {
            return;
        }
        let n = queued.len() as u64;
        let batch = EventBatch::new(std::mem::take(queued));
        if self
            .outputs
            .lock()
            .await
            .send_to(DEAD_LETTER_OUTPUT, batch)
            .await
            .is_err()
        {
            self.metrics.error(
                "dead_letter",
                n,
                &format_args!(
                    "the components reading `{}.{DEAD_LETTER_OUTPUT}` have stopped; {n} dead letter(s) lost",
                    self.id
                ),
            );
        }
    }

    pub fn flush_dead_letters(&self) {
        let mut file = self
            .dead_letter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = file.as_mut() {
            let _ = f.flush();
        }
    }

    /// Sends `batch` until each document is delivered, refused or given up, and finalizes
    /// each event accordingly; a request refused as too large (413) is sent again in halves.
    /// Returns the emptied batch (its buffers are reused for a later batch).
    pub async fn flush(self: Arc<Self>, batch: Batch) -> Batch {
        let Batch { body, items } = batch;
        // The body is handed to the HTTP client as `Bytes` (no copy); once the requests are
        // done nothing else holds it, and its allocation comes back below.
        let whole = Bytes::from(body);
        let mut parts = Parts::new((whole.clone(), items));
        let mut spare = Vec::new();
        let mut dead = Vec::new();
        while let Some((body, items)) = parts.next() {
            match self.flush_part(body, items, &mut dead).await {
                PartEnd::Done(items) => {
                    if items.capacity() > spare.capacity() {
                        spare = items;
                    }
                }
                PartEnd::TooLarge(part, msg) => {
                    if let Err((body, mut items)) = parts.split(part, halve) {
                        self.too_large(&body, &mut items, &msg, &mut dead);
                    }
                }
                PartEnd::Stopped(mut left) => {
                    for (_, more) in parts.drain() {
                        left.extend(more);
                    }
                    for it in &mut left {
                        it.finalize(EventStatus::Errored);
                    }
                    let n = left.len() as u64;
                    self.metrics.error(
                        "stopped",
                        n,
                        &format_args!(
                            "stopped while retrying: {n} document(s) not delivered, left unacknowledged (errored)"
                        ),
                    );
                    break;
                }
            }
            // Dead letters leave after each part, not when the last one is over.
            self.send_dead_letters(&mut dead).await;
        }
        self.send_dead_letters(&mut dead).await;
        drop(parts);
        // Takes the allocation back when nothing else holds it (else copies, rarely).
        let mut body = Vec::from(whole);
        body.clear();
        spare.clear();
        Batch { body, items: spare }
    }

    /// Rejects one document that is too large to be sent even alone.
    fn too_large(&self, body: &[u8], items: &mut [Item], msg: &str, dead: &mut Vec<Event>) {
        for it in items {
            let size = it.range.len();
            let refusal = Refusal {
                status: 413,
                error_type: "request_too_large".into(),
                reason: format!(
                    "a document of {size} bytes (with its action line) is too large for the endpoint, even alone"
                ),
            };
            self.metrics
                .error("rejected", 1, &format_args!("{refusal}; rejected ({msg})"));
            self.dead_letter(&refusal, &refusal.reason, it, body, dead);
            it.finalize(EventStatus::Rejected);
        }
    }

    /// Sends one part of a batch until each of its documents is delivered, refused or given
    /// up, or the part is refused as too large, or the sink is stopped.
    async fn flush_part(
        &self,
        mut body: Bytes,
        mut items: Vec<Item>,
        dead: &mut Vec<Event>,
    ) -> PartEnd {
        let mut retries: Retries = self.request.retries();
        while !items.is_empty() {
            if self.stop.is_cancelled() {
                return PartEnd::Stopped(items);
            }
            let attempts = retries.failed() + 1;
            let Some(outcome) = unless_stopped(self.send(&body, items.len()), &self.stop).await
            else {
                return PartEnd::Stopped(items);
            };
            // Whether a failure of this attempt is the last one (`request.retry_attempts`).
            let give_up = retries.is_last();
            let next = match outcome {
                Sent::Items(outcomes) => {
                    self.reporter.success();
                    let mut keep = Vec::new();
                    let mut delivered = 0u64;
                    let mut retry_reason = None;
                    for (mut item, o) in items.drain(..).zip(outcomes) {
                        match o {
                            ItemOutcome::Ok => {
                                item.finalize(EventStatus::Delivered);
                                delivered += 1;
                            }
                            ItemOutcome::Retry(r) if !give_up => {
                                retry_reason.get_or_insert(r);
                                keep.push(item);
                            }
                            ItemOutcome::Retry(r) => {
                                self.give_up(&mut item, &body, &r, attempts, dead);
                            }
                            ItemOutcome::Rejected(refusal) => {
                                let reason = refusal.to_string();
                                self.metrics.error(
                                    "rejected",
                                    1,
                                    &format_args!(
                                        "document refused (HTTP {}), not retried: {reason}",
                                        refusal.status
                                    ),
                                );
                                self.dead_letter(&refusal, &reason, &item, &body, dead);
                                item.finalize(EventStatus::Rejected);
                            }
                        }
                    }
                    self.metrics.add_sent(delivered);
                    if keep.is_empty() {
                        None
                    } else {
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
                        Some(None)
                    }
                }
                Sent::Retry(msg, after) => {
                    self.reporter.failure(&msg);
                    if give_up {
                        for mut it in items.drain(..) {
                            self.give_up(&mut it, &body, &msg, attempts, dead);
                        }
                        None
                    } else {
                        Some(after)
                    }
                }
                Sent::TooLarge(msg) => return PartEnd::TooLarge((body, items), msg),
                Sent::Refused(refusal, msg) => {
                    self.reporter.success();
                    self.metrics.error(
                        "rejected",
                        items.len() as u64,
                        &format_args!("{} document(s) refused: {msg}", items.len()),
                    );
                    for mut it in items.drain(..) {
                        self.dead_letter(&refusal, &msg, &it, &body, dead);
                        it.finalize(EventStatus::Rejected);
                    }
                    None
                }
            };
            // Dead letters leave after each attempt, not when the last retry is over.
            self.send_dead_letters(dead).await;
            let Some(after) = next else { break };
            match retries.wait(after, &self.stop).await {
                Wait::Again => {}
                // `give_up` above already settled every item of a last attempt.
                Wait::GaveUp => {
                    for mut it in items.drain(..) {
                        self.give_up(&mut it, &body, "retries used up", attempts, dead);
                    }
                }
                Wait::Stopped => return PartEnd::Stopped(items),
            }
        }
        PartEnd::Done(items)
    }

    fn give_up(
        &self,
        item: &mut Item,
        body: &[u8],
        reason: &str,
        attempts: u32,
        dead: &mut Vec<Event>,
    ) {
        self.metrics.error(
            "gave_up",
            1,
            &format_args!("giving up on a document after {attempts} attempts: {reason}"),
        );
        let refusal = Refusal {
            status: 0,
            error_type: "max_retries".into(),
            reason: format!("gave up after {attempts} attempts: {reason}"),
        };
        self.dead_letter(&refusal, reason, item, body, dead);
        item.finalize(EventStatus::Errored);
    }
}

/// The event sent to the `dead_letter` output for a refused document: a new log event (the
/// original is finalized by the sink) with the original's fields (a metric or span: its JSON
/// form) and `dead_letter.{status,error_type,reason,index,component}`.
fn dead_letter_event(event: &Event, refusal: &Refusal, action: &[u8], sink: &str) -> Event {
    let value = match event {
        Event::Log(l) => l.value().clone(),
        other => Value::from(other.to_json_value()),
    };
    let md = event.metadata();
    let mut log = LogEvent::from_value(
        value,
        EventMetadata {
            source_id: md.source_id.clone(),
            ingest_time: md.ingest_time,
            notifier: None,
        },
    );
    let mut dl = ObjectMap::new();
    dl.insert("status".into(), Value::Integer(i64::from(refusal.status)));
    dl.insert(
        "error_type".into(),
        Value::from(refusal.error_type.as_str()),
    );
    dl.insert("reason".into(), Value::from(refusal.reason.as_str()));
    if let Some(index) = action_index(action) {
        dl.insert("index".into(), Value::from(index));
    }
    dl.insert("component".into(), Value::from(sink));
    log.insert_field("dead_letter", Value::Object(dl));
    log.into()
}

/// The `_index` of an action line (`{"index":{"_index":"logs-2026.11.27"}}`).
fn action_index(action: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(action).ok()?;
    let meta = v.as_object()?.values().next()?;
    meta.get("_index")?.as_str().map(String::from)
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
