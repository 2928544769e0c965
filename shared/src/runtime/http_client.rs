//! The outgoing HTTP/1.1 client pieces the services share: the TLS configuration (rustls with
//! ring, the system's root certificates plus an optional CA file), and a small client for one
//! trusted origin (the LiveKit server) that keeps its connections alive between calls.
//!
//! Invariants: every call is bounded by its timeout, from connecting to the last byte of the
//! answer; at most `max_body` bytes of an answer are read; nothing here logs (the caller names
//! what failed without the secrets it sent).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// Why a TLS client configuration could not be built. `setting` names the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{setting} {path}: {reason}")]
    CaFile { setting: &'static str, path: String, reason: String },
    #[error("TLS set-up: {0}")]
    Tls(#[from] rustls::Error),
}

/// A TLS client configuration for HTTP/1.1 trusting the system's roots and those of `ca_file`
/// (PEM), named by `setting` in errors.
pub fn tls_client_config(ca_file: Option<&Path>, setting: &'static str) -> Result<ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (_, unreadable) = roots.add_parsable_certificates(native.certs);
    if unreadable > 0 || !native.errors.is_empty() {
        tracing::debug!(unreadable, errors = native.errors.len(), "some system root certificates were not read");
    }
    if let Some(path) = ca_file {
        let ca_error = |reason: String| TlsSetupError::CaFile { setting, path: path.display().to_string(), reason };
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|error| ca_error(error.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ca_error(error.to_string()))?;
        if certificates.is_empty() {
            return Err(ca_error("no PEM CERTIFICATE in it".into()));
        }
        for certificate in certificates {
            roots.add(certificate).map_err(|error| ca_error(error.to_string()))?;
        }
    }
    if roots.is_empty() {
        tracing::warn!(setting, "no trusted root certificate (no system store, no CA file): https calls will fail");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An origin: `http` or `https`, a host and a port (`ws` and `wss`, as LiveKit URLs are often
/// written, mean `http` and `https`), and a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// The URL's path without its trailing `/` (empty for none).
    pub path_prefix: String,
}

impl std::str::FromStr for Origin {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url:?} is not a URL"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            other => return Err(format!("{other:?}: only http, https, ws and wss URLs are supported")),
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err("the URL may hold no credentials, query or fragment".into());
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse().map_err(|_| format!("{port:?} is not a port number"))?)
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let path_prefix = path.trim_end_matches('/');
        let path_prefix = if path_prefix.is_empty() { String::new() } else { format!("/{path_prefix}") };
        Ok(Origin { https, host: host.to_owned(), port, path_prefix })
    }
}

impl Origin {
    fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == if self.https { 443 } else { 80 } { host } else { format!("{host}:{}", self.port) }
    }
}

/// Why a call got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

/// Connections kept open between calls, at most.
const IDLE_CONNECTIONS: usize = 32;

/// A client of one origin that keeps connections alive; cheap to clone.
#[derive(Clone)]
pub struct OriginClient {
    origin: Arc<Origin>,
    tls: TlsConnector,
    timeout: Duration,
    user_agent: &'static str,
    idle: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>,
}

impl OriginClient {
    pub fn new(origin: Origin, tls: ClientConfig, timeout: Duration, user_agent: &'static str) -> Self {
        OriginClient {
            origin: Arc::new(origin),
            tls: TlsConnector::from(Arc::new(tls)),
            timeout,
            user_agent,
            idle: Arc::default(),
        }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// POSTs `body` as `content_type` to the origin's prefix + `path` with `headers`, and reads
    /// the whole answer (at most `max_body` bytes), whatever its status.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
        max_body: usize,
    ) -> Result<Answer, CallError> {
        tokio::time::timeout(self.timeout, self.exchange(path, content_type, headers, body, max_body))
            .await
            .unwrap_or(Err(CallError::Timeout(self.timeout)))
    }

    async fn exchange(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
        max_body: usize,
    ) -> Result<Answer, CallError> {
        let mut sender = match self.idle_connection().await {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        let mut request = hyper::Request::post(format!("{}{path}", self.origin.path_prefix))
            .header(HOST, self.origin.authority())
            .header(CONTENT_TYPE, content_type)
            .header(USER_AGENT, self.user_agent);
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request.body(Full::new(body)).map_err(|error| CallError::Http(error.to_string()))?;
        let response = sender.send_request(request).await.map_err(|error| CallError::Http(error.to_string()))?;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let mut incoming = response.into_body();
        let mut read = BytesMut::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|error| CallError::Http(error.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if read.len() + data.len() > max_body {
                    return Err(CallError::TooLarge(max_body));
                }
                read.extend_from_slice(&data);
            }
        }
        self.keep(sender);
        Ok(Answer { status, content_type, body: read.freeze() })
    }

    /// An open connection ready for a request, if one is kept.
    async fn idle_connection(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let mut sender = self.idle.lock().expect("the pool lock is never poisoned").pop()?;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn keep(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().expect("the pool lock is never poisoned");
        if !sender.is_closed() && idle.len() < IDLE_CONNECTIONS {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, CallError> {
        let origin = &self.origin;
        let tcp = TcpStream::connect((origin.host.as_str(), origin.port))
            .await
            .map_err(|error| CallError::Connect(format!("{}: {error}", origin.authority())))?;
        let _ = tcp.set_nodelay(true);
        let http = |error: hyper::Error| CallError::Http(error.to_string());
        if origin.https {
            let name = ServerName::try_from(origin.host.clone())
                .map_err(|error| CallError::Tls(format!("{}: {error}", origin.host)))?;
            let tls = self.tls.connect(name, tcp).await.map_err(|error| CallError::Tls(error.to_string()))?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(http)?;
            tokio::spawn(connection);
            Ok(sender)
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(http)?;
            tokio::spawn(connection);
            Ok(sender)
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn calls_reuse_a_kept_alive_connection_and_bound_the_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // One connection only, answering each request in turn; a second connection is counted.
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = vec![0u8; 4096];
            for answer in [
                &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"[..],
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n123456789",
            ] {
                let mut read = 0;
                while !String::from_utf8_lossy(&buffer[..read]).ends_with("{}") {
                    read += stream.read(&mut buffer[read..]).await.unwrap();
                }
                stream.write_all(answer).await.unwrap();
            }
            let second = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
            (second.is_ok(), stream)
        });
        let tls = tls_client_config(None, "TEST").unwrap();
        let client =
            OriginClient::new(format!("http://127.0.0.1:{port}").parse().unwrap(), tls, Duration::from_secs(5), "test");
        let first = client.post("/a", "application/json", &[], Bytes::from_static(b"{}"), 64).await.unwrap();
        assert_eq!((first.status, first.body.as_ref()), (200, &b"{}"[..]));
        let second = client.post("/b", "application/json", &[], Bytes::from_static(b"{}"), 8).await;
        assert_eq!(second, Err(CallError::TooLarge(8)), "a 9-byte answer past an 8-byte bound");
        let (reconnected, _stream) = server.await.unwrap();
        assert!(!reconnected, "the second call went over the first call's connection");
    }

    #[test]
    fn origins_accept_livekit_urls() {
        let origin: Origin = "wss://my-project.livekit.cloud".parse().unwrap();
        assert_eq!(
            origin,
            Origin { https: true, host: "my-project.livekit.cloud".into(), port: 443, path_prefix: String::new() }
        );
        let origin: Origin = "http://127.0.0.1:7880/lk/".parse().unwrap();
        assert_eq!((origin.https, origin.port, origin.path_prefix.as_str()), (false, 7880, "/lk"));
        assert_eq!(origin.authority(), "127.0.0.1:7880");
        let origin: Origin = "http://[::1]:7880".parse().unwrap();
        assert_eq!((origin.host.as_str(), origin.authority().as_str()), ("::1", "[::1]:7880"));
        for bad in ["livekit:7880", "ftp://host", "http://user:pw@host", "http://host/?q=1", "http://:80", "http://h:x"]
        {
            assert!(bad.parse::<Origin>().is_err(), "{bad}");
        }
    }
}
