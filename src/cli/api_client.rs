//! How `weir tap` and `weir top` reach a running Weir's API: over HTTP (`--api`, see
//! `http.rs`) or over NATS (`--nats URL --node NAME`, the protocol of `crate::api_nats`).
//! Blocking, as the commands are: the NATS client runs on a runtime of one thread of its own.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use weir_connect::nats::async_nats::{self, Client, HeaderMap, Subscriber};
use weir_connect::nats::{connect, NatsConnect};
use weir_pipeline::config::{NatsAuthConfig, Secret, TlsClientConfig};
use weir_pipeline::metrics::ComponentMetrics;

use super::http;
use crate::api_nats::{subject_of, KEEPALIVE, KEEPALIVE_EVERY_SECS, METHOD, QUERY, STATUS, STREAM};

/// The environment variable holding a NATS token (`--nats`), sent when set.
pub const NATS_TOKEN_VAR: &str = "WEIR_NATS_TOKEN";
/// The environment variables holding a NATS user and password (`--nats`), sent when set.
pub const NATS_USER_VAR: &str = "WEIR_NATS_USER";
pub const NATS_PASSWORD_VAR: &str = "WEIR_NATS_PASSWORD";

/// How long to wait for the first message of an answer over NATS when the command gives no
/// timeout (a tap): the agent answers at once.
const FIRST_ANSWER: Duration = Duration::from_secs(10);

/// `--nats` and its options.
#[derive(Debug, Clone, Default)]
pub struct NatsArgs {
    /// The NATS server URL(s).
    pub url: String,
    /// The agent's node name (`[api.nats] node`).
    pub node: String,
    /// A credentials file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// TLS: CA file to trust, client certificate and key.
    pub ca_file: Option<PathBuf>,
    pub crt_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Send a token or password without TLS.
    pub allow_plaintext_credentials: bool,
}

/// A running Weir's API.
pub enum Api {
    /// `host:port` of its HTTP API.
    Http(String),
    /// Its API over NATS (boxed: a runtime and a client).
    Nats(Box<NatsApi>),
}

impl Api {
    /// `--nats` when given, else `--api`.
    pub fn new(api: &str, nats: Option<&NatsArgs>) -> Result<Api, String> {
        match nats {
            Some(n) => NatsApi::connect(n).map(|a| Api::Nats(Box::new(a))),
            None => http::authority(api).map(Api::Http),
        }
    }

    /// What the commands show as the address.
    pub fn describe(&self) -> String {
        match self {
            Api::Http(a) => a.clone(),
            Api::Nats(n) => format!("{} node {}", n.url, n.node),
        }
    }

    /// `GET path` (with its query). `timeout` bounds the wait for each part of the answer
    /// (`None`: parts may be waited for ever, as a tap's are).
    pub fn get(&self, path: &str, timeout: Option<Duration>) -> Result<Reply<'_>, String> {
        match self {
            Api::Http(a) => http::get(a, path, timeout).map(Reply::Http),
            Api::Nats(n) => n.get(path, timeout).map(Reply::Nats),
        }
    }
}

/// An answer being read.
pub enum Reply<'a> {
    Http(http::Response),
    Nats(NatsReply<'a>),
}

impl Reply<'_> {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Reply::Http(r) => r.status,
            Reply::Nats(r) => r.status,
        }
    }

    /// The next piece of the body, `None` at its end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self {
            Reply::Http(r) => r.next_chunk(),
            Reply::Nats(r) => r.next_chunk(),
        }
    }

    /// The whole body.
    pub fn bytes(mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(c) = self.next_chunk()? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }
}

/// A connection to a NATS server, to reach one agent's API.
pub struct NatsApi {
    rt: tokio::runtime::Runtime,
    client: Client,
    url: String,
    node: String,
}

fn env_secret(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}

impl NatsApi {
    fn connect(args: &NatsArgs) -> Result<NatsApi, String> {
        // As the agent makes its own: `ip-10-0-0-1.ec2.internal` is `ip-10-0-0-1_ec2_internal`.
        let node = crate::api_nats::token(&args.node);
        if node.is_empty() {
            return Err("--node: give the agent's `[api.nats] node`".into());
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-nats")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        let auth = NatsAuthConfig {
            user: std::env::var(NATS_USER_VAR).ok().filter(|v| !v.is_empty()),
            password: env_secret(NATS_PASSWORD_VAR),
            token: env_secret(NATS_TOKEN_VAR),
            nkey_seed: None,
            credentials_file: args.credentials.clone(),
        };
        let tls = (args.ca_file.is_some() || args.crt_file.is_some() || args.key_file.is_some())
            .then(|| TlsClientConfig {
                ca_file: args.ca_file.clone(),
                crt_file: args.crt_file.clone(),
                key_file: args.key_file.clone(),
                ..TlsClientConfig::default()
            });
        let client = rt
            .block_on(connect(
                NatsConnect {
                    url: &args.url,
                    auth: &auth,
                    tls: tls.as_ref(),
                    name: Some("weir-cli"),
                    allow_plaintext_credentials: args.allow_plaintext_credentials,
                },
                ComponentMetrics::detached("weir-cli"),
            ))
            .map_err(|e| format!("--nats: {e}"))?;
        Ok(NatsApi {
            rt,
            client,
            url: args.url.clone(),
            node,
        })
    }

    fn get(&self, path: &str, timeout: Option<Duration>) -> Result<NatsReply<'_>, String> {
        // What is dropped here on an error (the subscription) needs the runtime.
        let _runtime = self.rt.enter();
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let subject = subject_of(&self.node, path);
        let client = &self.client;
        let wait = timeout.unwrap_or(FIRST_ANSWER);
        let (sub, first) = self.rt.block_on(async {
            let ask = async {
                let inbox = client.new_inbox();
                let mut sub = client
                    .subscribe(inbox.clone())
                    .await
                    .map_err(|e| format!("NATS: cannot subscribe: {e}"))?;
                let mut h = HeaderMap::new();
                h.insert(METHOD, "GET");
                if !query.is_empty() {
                    h.insert(QUERY, query);
                }
                client
                    .publish_with_reply_and_headers(subject.clone(), inbox, h, Bytes::new())
                    .await
                    .map_err(|e| format!("NATS: cannot publish to {subject}: {e}"))?;
                client
                    .flush()
                    .await
                    .map_err(|e| format!("NATS: cannot send to {subject}: {e}"))?;
                let first = sub.next().await;
                Ok::<_, String>((sub, first))
            };
            match tokio::time::timeout(wait, ask).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "no answer on {subject} within {}s (is the NATS server at {} up, and the agent connected to it with `[api.nats] node = \"{}\"`?)",
                    wait.as_secs(), self.url, self.node
                )),
            }
        })?;
        let first = first.ok_or("NATS: the subscription closed")?;
        if first.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            return Err(format!(
                "no agent answers on {subject}: none is connected to {} with `[api.nats] node = \"{}\"` (or this user may not publish there)",
                self.url, self.node
            ));
        }
        let header = |k: &str| {
            first
                .headers
                .as_ref()
                .and_then(|h| h.get(k))
                .map(|v| v.as_str().to_string())
        };
        let status = header(STATUS)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("not an answer of Weir's API on {subject} (no {STATUS})"))?;
        let more = header(STREAM).as_deref() == Some("more");
        Ok(NatsReply {
            api: self,
            sub: Some(sub),
            status,
            keepalive: header(KEEPALIVE).filter(|_| more),
            first: Some(first.payload),
            done: !more,
            timeout,
            last_keepalive: tokio::time::Instant::now(),
        })
    }
}

/// An answer over NATS: one message, or several while we send keep-alives.
pub struct NatsReply<'a> {
    api: &'a NatsApi,
    /// Dropped inside the runtime (its unsubscribe is a task).
    sub: Option<Subscriber>,
    status: u16,
    keepalive: Option<String>,
    first: Option<Bytes>,
    done: bool,
    timeout: Option<Duration>,
    last_keepalive: tokio::time::Instant,
}

impl NatsReply<'_> {
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        if let Some(b) = self.first.take().filter(|b| !b.is_empty()) {
            return Ok(Some(b.to_vec()));
        }
        if self.done {
            return Ok(None);
        }
        let every = Duration::from_secs(KEEPALIVE_EVERY_SECS);
        let client = &self.api.client;
        let Some(sub) = self.sub.as_mut() else {
            return Ok(None);
        };
        let (keepalive, last, timeout) = (&self.keepalive, &mut self.last_keepalive, self.timeout);
        let got = self.api.rt.block_on(async {
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            loop {
                let give_up = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    m = sub.next() => return m.ok_or_else(|| "NATS: the subscription closed".to_string()),
                    _ = tokio::time::sleep_until(*last + every), if keepalive.is_some() => {
                        if let Some(k) = keepalive {
                            client
                                .publish(k.clone(), Bytes::from_static(b"alive"))
                                .await
                                .map_err(|e| format!("NATS: cannot send a keep-alive: {e}"))?;
                        }
                        *last = tokio::time::Instant::now();
                    }
                    _ = give_up => return Err("timed out waiting for the answer over NATS".to_string()),
                }
            }
        })?;
        let more = got
            .headers
            .as_ref()
            .and_then(|h| h.get(STREAM))
            .is_some_and(|v| v.as_str() == "more");
        if !more {
            self.done = true;
        }
        if got.payload.is_empty() {
            return if self.done {
                Ok(None)
            } else {
                self.next_chunk()
            };
        }
        Ok(Some(got.payload.to_vec()))
    }
}

impl Drop for NatsReply<'_> {
    /// A stream left before its end (a tap's `--limit`): tell the agent to stop it now rather
    /// than when keep-alives stop coming.
    fn drop(&mut self) {
        let _runtime = self.api.rt.enter();
        drop(self.sub.take());
        if self.done {
            return;
        }
        if let Some(k) = self.keepalive.take() {
            let client = &self.api.client;
            self.api.rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    let _ = client.publish(k, Bytes::from_static(b"stop")).await;
                    let _ = client.flush().await;
                })
                .await;
            });
        }
    }
}
