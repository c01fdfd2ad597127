//! The gRPC side: connecting to Hubble Relay or a node's Hubble server (TCP, TLS, mTLS or a
//! Unix socket) and calling `observer.Observer/GetFlows`, without generated code.
//!
//! Responses are handed over as raw protobuf bytes ([`FlowsCodec`]) and decoded by the source
//! itself, so one malformed message is counted and skipped instead of ending the stream, and
//! the raw bytes can be hashed to recognise a flow seen before a reconnect.

use std::time::Duration;

use bytes::{Buf, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;
use weir_connect::tls::{ClientTls, TlsClientConfig, TlsError};

use super::proto::{GetFlowsRequest, GET_FLOWS_PATH};

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid address `{address}`: {reason}")]
    Address { address: String, reason: String },
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("cannot connect to `{address}`: {source}")]
    Connect {
        address: String,
        source: tonic::transport::Error,
    },
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// As configured (`localhost:4245`, `https://relay:443`, `unix:///var/run/cilium/hubble.sock`).
    pub address: String,
    /// The `tls` table: its files are read at every connect, so rotated certificates are
    /// picked up on the next reconnect.
    pub tls: Option<TlsClientConfig>,
    pub connect_timeout: Duration,
}

impl ConnectConfig {
    /// Whether `tls` asks for TLS (an `https://` address does too).
    fn tls_wanted(&self) -> bool {
        TlsClientConfig::wanted(self.tls.as_ref())
    }

    /// The URI tonic connects to: a scheme is added when the address has none.
    pub fn uri(&self) -> Result<String, ClientError> {
        let a = self.address.trim();
        let bad = |reason: &str| ClientError::Address {
            address: self.address.clone(),
            reason: reason.to_string(),
        };
        if a.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(path) = a
            .strip_prefix("unix://")
            .or_else(|| a.strip_prefix("unix:"))
        {
            if self.tls_wanted() {
                return Err(bad("TLS is not used over a Unix socket; remove `tls`"));
            }
            if path.is_empty() {
                return Err(bad("a Unix socket address needs a path"));
            }
            return Ok(a.to_string());
        }
        let scheme = if self.tls_wanted() { "https" } else { "http" };
        let uri = if let Some(rest) = a.strip_prefix("http://") {
            if self.tls_wanted() {
                return Err(bad("`http://` with `tls` set; use `https://` or no scheme"));
            }
            format!("http://{rest}")
        } else if let Some(rest) = a.strip_prefix("https://") {
            if self.tls.as_ref().and_then(|t| t.enabled) == Some(false) {
                return Err(bad("`https://` with `tls.enabled = false`"));
            }
            format!("https://{rest}")
        } else if a.contains("://") {
            return Err(bad("the scheme must be http://, https:// or unix://"));
        } else {
            format!("{scheme}://{a}")
        };
        Endpoint::from_shared(uri.clone()).map_err(|e| bad(&e.to_string()))?;
        Ok(uri)
    }

    /// Reads the TLS files, checking they exist and parse (done at build time too, so a
    /// wrong path is a startup error rather than a retry loop).
    pub fn check_tls(&self) -> Result<(), ClientError> {
        Ok(TlsClientConfig::check(self.tls.as_ref())?)
    }

    /// Connects (TCP or Unix socket, then the TLS and HTTP/2 handshakes).
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        let uri = self.uri()?;
        let bad = |reason: String| ClientError::Address {
            address: self.address.clone(),
            reason,
        };
        let (endpoint, tls) = if uri.starts_with("https://") {
            weir_connect::grpc::endpoint("address", &uri, self.tls.as_ref()).map_err(bad)?
        } else {
            (
                Endpoint::from_shared(uri).map_err(|e| bad(e.to_string()))?,
                None,
            )
        };
        let endpoint = endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // A Relay that vanishes without closing the connection (node lost) is noticed.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let channel = match tls {
            Some(connector) => endpoint.connect_with_connector(connector).await,
            None => endpoint.connect().await,
        };
        channel.map_err(|source| ClientError::Connect {
            address: self.address.clone(),
            source,
        })
    }
}

/// Calls `GetFlows`; the stream yields each response as its raw protobuf bytes.
pub async fn get_flows(
    channel: Channel,
    request: GetFlowsRequest,
) -> Result<Streaming<Bytes>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("the connection is not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_static(GET_FLOWS_PATH);
    let response = grpc
        .server_streaming(tonic::Request::new(request), path, FlowsCodec)
        .await?;
    Ok(response.into_inner())
}

/// Encodes the request with prost; passes each response through as bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowsCodec;

impl Codec for FlowsCodec {
    type Encode = GetFlowsRequest;
    type Decode = Bytes;
    type Encoder = RequestEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestEncoder;

impl Encoder for RequestEncoder {
    type Item = GetFlowsRequest;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

/// Yields one gRPC message's bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(address: &str, tls: bool) -> ConnectConfig {
        ConnectConfig {
            address: address.into(),
            tls: tls.then(|| TlsClientConfig {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            }),
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn addresses_get_the_right_scheme() {
        assert_eq!(
            cfg("localhost:4245", false).uri().unwrap(),
            "http://localhost:4245"
        );
        assert_eq!(
            cfg("relay.kube-system:443", true).uri().unwrap(),
            "https://relay.kube-system:443"
        );
        assert_eq!(
            cfg("unix:///var/run/cilium/hubble.sock", false)
                .uri()
                .unwrap(),
            "unix:///var/run/cilium/hubble.sock"
        );
        // The built-in roots are enough for `https://`.
        assert_eq!(
            cfg("https://relay:443", false).uri().unwrap(),
            "https://relay:443"
        );
        assert!(cfg("unix:///x.sock", true).uri().is_err());
        assert!(cfg("ftp://relay", false).uri().is_err());
        assert!(cfg("", false).uri().is_err());
        let e = cfg("relay:443", true).check_tls().unwrap_err().to_string();
        assert_eq!(
            e,
            "`tls.ca_file` /nonexistent/ca.pem: No such file or directory"
        );
    }
}
