//! A test Hubble server: real gRPC (HTTP/2, tonic) serving `observer.Observer/GetFlows` with
//! the same protobuf messages as the source, replaying what the test gives it.
//!
//! It behaves like Hubble's observer for the parts Weir uses: `number` (the last N), `since`
//! and `until` (by flow time), `follow` (keep the call open and send what is added later), and
//! it records every request so tests can check what the source asked for. Like Hubble, it can
//! keep a ring ([`Replay::ring`]): only the newest flows, the oldest dropped as new ones come. A server runs on its
//! own thread and runtime; [`TestServer::kill`] drops that runtime, which closes every
//! connection abruptly, like a Relay that is killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use futures::Stream;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::Grpc;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::Status;
use weir_sources::hubble::jsonpb::response_from_json;
use weir_sources::hubble::proto::{
    GetFlowsRequest, GetFlowsResponse, ResponseType, Timestamp, GET_FLOWS_PATH,
};

pub fn nanos(t: Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

/// What the server holds: encoded responses with their time, in the order they are sent.
pub struct Replay {
    /// The responses held, and how many were dropped before the first (ring).
    items: Mutex<(std::collections::VecDeque<(i128, Bytes)>, usize)>,
    /// Hold at most this many responses (Hubble's ring); `None`: all.
    capacity: Mutex<Option<usize>>,
    grew: tokio::sync::watch::Sender<usize>,
    /// Every request received, in order.
    pub requests: Mutex<Vec<GetFlowsRequest>>,
    /// Pause this long after every `pace.0` responses (so a test can act mid-stream).
    pub pace: Mutex<Option<(usize, Duration)>>,
}

impl Default for Replay {
    fn default() -> Self {
        Self {
            items: Mutex::new(Default::default()),
            capacity: Mutex::new(None),
            grew: tokio::sync::watch::channel(0).0,
            requests: Mutex::new(Vec::new()),
            pace: Mutex::new(None),
        }
    }
}

impl Replay {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A server keeping only the newest `capacity` responses, like Hubble's ring.
    pub fn ring(capacity: usize) -> Arc<Self> {
        let r = Self::default();
        *r.capacity.lock().unwrap() = Some(capacity.max(1));
        Arc::new(r)
    }

    /// The time of the oldest response still held.
    pub fn oldest(&self) -> Option<i128> {
        self.items.lock().unwrap().0.front().map(|(t, _)| *t)
    }

    /// Adds a response (its time: the flow's, else the response's).
    pub fn push(&self, resp: &GetFlowsResponse) {
        let t = match &resp.response_types {
            Some(ResponseType::Flow(f)) => f.time.or(resp.time),
            _ => resp.time,
        };
        self.push_raw(t.map(nanos).unwrap_or(0), resp.encode_to_vec().into());
    }

    /// Adds a jsonpb line (`hubble observe -o jsonpb`), converted to the protobuf message.
    pub fn push_json(&self, line: &str) {
        let v: serde_json::Value = serde_json::from_str(line).expect("test data is JSON");
        let resp = response_from_json(&v).expect("test data is a GetFlowsResponse");
        self.push(&resp);
    }

    /// Adds the bytes of one gRPC message as they are (a malformed one, for instance).
    pub fn push_raw(&self, nanos: i128, bytes: Bytes) {
        let cap = *self.capacity.lock().unwrap();
        let mut items = self.items.lock().unwrap();
        items.0.push_back((nanos, bytes));
        if cap.is_some_and(|c| items.0.len() > c) {
            items.0.pop_front();
            items.1 += 1;
        }
        let end = items.0.len() + items.1;
        self.grew.send_replace(end);
    }

    /// The responses of one call, sent into `tx` until the call ends or the client goes.
    async fn serve(
        self: Arc<Self>,
        req: GetFlowsRequest,
        tx: tokio::sync::mpsc::Sender<Result<Bytes, Status>>,
    ) {
        self.requests.lock().unwrap().push(req.clone());
        let since = req.since.map(nanos);
        let until = req.until.map(nanos);
        let mut grew = self.grew.subscribe();
        // `next` counts every response ever added (dropped ones too).
        let mut next = {
            let items = self.items.lock().unwrap();
            let end = items.0.len() + items.1;
            if req.number > 0 {
                end.saturating_sub(req.number as usize)
            } else if since.is_some() || !req.follow {
                items.1
            } else {
                end
            }
        };
        let mut sent = 0usize;
        loop {
            let batch: Vec<(i128, Bytes)> = {
                let items = self.items.lock().unwrap();
                // What was dropped from the ring before it could be sent is gone.
                let from = next.saturating_sub(items.1).min(items.0.len());
                let b = items.0.range(from..).cloned().collect();
                next = items.0.len() + items.1;
                b
            };
            for (t, bytes) in batch {
                if since.is_some_and(|s| t < s) || until.is_some_and(|u| t > u) {
                    continue;
                }
                if tx.send(Ok(bytes)).await.is_err() {
                    return;
                }
                sent += 1;
                let pace = *self.pace.lock().unwrap();
                if let Some((every, pause)) = pace {
                    if sent.is_multiple_of(every) {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
            if !req.follow {
                return;
            }
            if grew.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Decodes the request with prost; sends each response's bytes as they are.
#[derive(Clone, Copy, Default)]
struct ServerCodec;

struct RawEncoder;
struct RequestDecoder;

impl Codec for ServerCodec {
    type Encode = Bytes;
    type Decode = GetFlowsRequest;
    type Encoder = RawEncoder;
    type Decoder = RequestDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RequestDecoder {
    type Item = GetFlowsRequest;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<GetFlowsRequest>, Status> {
        GetFlowsRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("not a GetFlowsRequest: {e}")))
    }
}

type FlowStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// The `GetFlows` method.
struct GetFlows(Arc<Replay>);

impl Service<tonic::Request<GetFlowsRequest>> for GetFlows {
    type Response = tonic::Response<FlowStream>;
    type Error = Status;
    type Future = BoxFuture<Self::Response, Status>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::Request<GetFlowsRequest>) -> Self::Future {
        let replay = Arc::clone(&self.0);
        Box::pin(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(replay.serve(req.into_inner(), tx));
            let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
            Ok(tonic::Response::new(Box::pin(stream) as FlowStream))
        })
    }
}

/// The `observer.Observer` service: `GetFlows`, and `UNIMPLEMENTED` for every other method.
#[derive(Clone)]
struct Observer(Arc<Replay>);

impl Service<http::Request<tonic::body::Body>> for Observer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let replay = Arc::clone(&self.0);
        Box::pin(async move {
            if req.uri().path() != GET_FLOWS_PATH {
                let msg = format!("{} is not served here", req.uri().path());
                return Ok(Status::unimplemented(msg).into_http());
            }
            let mut grpc = Grpc::new(ServerCodec);
            Ok(grpc.server_streaming(GetFlows(replay), req).await)
        })
    }
}

/// PEM material of the server's TLS (and the CA of client certificates, for mutual TLS).
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: Option<String>,
}

/// A running test server.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts serving `replay` on `addr` (port 0: any free port).
    pub fn start(replay: Arc<Replay>, addr: SocketAddr, tls: Option<ServerTls>) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // The port of a server killed a moment ago may need a moment.
                let mut tries = 0;
                let listener = loop {
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(e) if tries < 100 => {
                            tries += 1;
                            let _ = e;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("test Hubble server cannot bind {addr}: {e}"),
                    }
                };
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                let mut builder = Server::builder();
                if let Some(t) = tls {
                    let mut cfg =
                        ServerTlsConfig::new().identity(Identity::from_pem(t.cert_pem, t.key_pem));
                    if let Some(ca) = t.client_ca_pem {
                        cfg = cfg.client_ca_root(Certificate::from_pem(ca));
                    }
                    builder = builder.tls_config(cfg).unwrap();
                }
                let incoming = TcpIncoming::from(listener);
                tokio::select! {
                    r = builder.serve_with_incoming(Observer(replay), incoming) => {
                        r.expect("test Hubble server");
                    }
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime drops every connection task: the sockets close at once.
            drop(rt);
        });
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("test Hubble server started");
        TestServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Stops the server the hard way: listener and every open stream gone at once.
    pub fn kill(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
