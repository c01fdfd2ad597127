//! gRPC clients (tonic) over the TLS of the shared `tls` table: the `hubble` source and the
//! `otlp` sink.
//!
//! tonic's own TLS options cannot express every option of the table (no way to skip the
//! hostname check, for one), so the TLS is done here, with the same
//! [`rustls::ClientConfig`](crate::tls::TlsClientConfig::rustls_client_config) as every other
//! client, by a connector handed to tonic. tonic is given the `http://` form of the address
//! (it would otherwise insist on doing TLS itself) and the `https://` form as the origin, so
//! requests still say `:scheme: https`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::Endpoint;

use crate::tls::{ClientTls, TlsClientConfig, TlsError};

pub use tonic;

/// Connects TCP, then TLS (ALPN `h2`) with the shared client configuration.
#[derive(Clone)]
pub struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    tls: Arc<TlsClientConfig>,
}

impl TlsConnector {
    /// Reads and checks every file of `tls`.
    pub fn new(tls: &TlsClientConfig) -> Result<Self, TlsError> {
        let cfg = tls.rustls_client_config(&[b"h2"])?;
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            tls: Arc::new(tls.clone()),
        })
    }
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| bad(format!("`{uri}` has no host")))?
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = this
                .tls
                .server_name_for(&host)
                .map_err(|e| bad(e.to_string()))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = TcpStream::connect((host, port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = this.connector.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A tonic endpoint for `url` (`http://` or `https://host:port`) and, for `https://`, the
/// connector that does its TLS. `tls` is checked against the scheme
/// ([`TlsClientConfig::check_scheme`]) and its files are read (even for `http://`, so a
/// wrong path is found at start). `option` names the address option in errors.
pub fn endpoint(
    option: &'static str,
    url: &str,
    tls: Option<&TlsClientConfig>,
) -> Result<(Endpoint, Option<TlsConnector>), String> {
    TlsClientConfig::check_scheme(tls, option, url).map_err(|e| e.to_string())?;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{option}` `{url}`: {e}"))?;
    let default = TlsClientConfig::default();
    let connector = TlsConnector::new(TlsClientConfig::unless_disabled(tls).unwrap_or(&default))
        .map_err(|e| e.to_string())?;
    if uri.scheme_str() != Some("https") {
        let ep = Endpoint::from_shared(url.to_string()).map_err(|e| format!("`{option}`: {e}"))?;
        return Ok((ep, None));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{option}` `{url}` has no host"))?;
    let port = uri.port_u16().unwrap_or(443);
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    let plain = format!("http://{}:{port}{path}", authority.host());
    let origin: http::Uri = format!("https://{authority}")
        .parse()
        .map_err(|e| format!("`{option}` `{url}`: {e}"))?;
    let ep = Endpoint::from_shared(plain)
        .map_err(|e| format!("`{option}`: {e}"))?
        .origin(origin);
    Ok((ep, Some(connector)))
}
