//! The HTTP client of deliveries: one `POST` per attempt, on a connection of its own, HTTP/1.1,
//! over TLS for `https` (rustls with ring; the system's root certificates plus
//! `DELIVERY_CA_FILE`).
//!
//! Invariants (the sender's security): it connects only to addresses the destination policy
//! permits, resolving names itself at every attempt ([`Policy::addresses`]), so what was checked
//! is what is connected to; no proxy is used; a redirect is an answer like any other, never
//! followed; at most [`MAX_BODY_BYTES`] of an answer's body are read, and only of a failure's
//! (for its error text); the whole attempt, from resolution to the answer's body, is bounded by
//! the timeout. Nothing here logs: the caller records the outcome without the URL's path or
//! query (which may hold a token) and never sees a secret.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper_util::rt::TokioIo;
use shared::runtime::http_client::{TlsSetupError, tls_client_config};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use super::destination::{Destination, DestinationError, Policy};
use super::schedule::parse_retry_after;

/// The most of an answer's body that is read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The most of it kept in an attempt's error text.
const ERROR_TEXT_CHARS: usize = 300;
const AGENT: &str = concat!("attendance-deliver/", env!("CARGO_PKG_VERSION"));

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Its `Retry-After`, if any and readable.
    pub retry_after: Option<Duration>,
    /// The start of its body, for a failure (empty for a success): printable characters only.
    pub excerpt: String,
}

/// Why an attempt got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Refused(#[from] DestinationError),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
}

impl SendError {
    /// The stable name of this failure in metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            SendError::Timeout(_) => "timeout",
            SendError::Refused(_) => "refused",
            SendError::Connect(_) => "unreachable",
            SendError::Tls(_) => "tls",
            SendError::Http(_) => "protocol",
        }
    }
}

/// The delivery client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    policy: Arc<Policy>,
    tls: TlsConnector,
    timeout: Duration,
}

impl Client {
    /// A client that delivers where `policy` permits, each attempt within `timeout`, trusting
    /// the system's roots and those of `ca_file` (PEM).
    pub fn new(policy: Policy, timeout: Duration, ca_file: Option<&Path>) -> Result<Self, TlsSetupError> {
        let config = tls_client_config(ca_file, "DELIVERY_CA_FILE")?;
        Ok(Client { policy: Arc::new(policy), tls: TlsConnector::from(Arc::new(config)), timeout })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// POSTs `body` (JSON) with `headers` to `destination` and returns the answer, whatever its
    /// status; an error when there was none within the timeout.
    pub async fn post(
        &self,
        destination: &Destination,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Answer, SendError> {
        tokio::time::timeout(self.timeout, self.exchange(destination, headers, body))
            .await
            .unwrap_or(Err(SendError::Timeout(self.timeout)))
    }

    async fn exchange(
        &self,
        destination: &Destination,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Answer, SendError> {
        let addresses = self.policy.addresses(destination).await?;
        let mut last_error = None;
        let mut connected = None;
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    connected = Some(stream);
                    break;
                }
                Err(error) => last_error = Some(format!("{address}: {error}")),
            }
        }
        let Some(tcp) = connected else {
            return Err(SendError::Connect(last_error.unwrap_or_else(|| "no address".into())));
        };
        let _ = tcp.set_nodelay(true);
        if destination.is_https() {
            let name = ServerName::try_from(destination.host().to_owned())
                .map_err(|error| SendError::Tls(format!("{}: {error}", destination.host())))?;
            let tls = self.tls.connect(name, tcp).await.map_err(|error| SendError::Tls(error.to_string()))?;
            request(TokioIo::new(tls), destination, headers, body).await
        } else {
            request(TokioIo::new(tcp), destination, headers, body).await
        }
    }
}

/// One request on a new connection `io`, and its answer.
async fn request<T>(
    io: T,
    destination: &Destination,
    headers: &[(&'static str, String)],
    body: Bytes,
) -> Result<Answer, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http = |error: hyper::Error| SendError::Http(error.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(http)?;
    // The connection is driven on its own task, ended with this attempt (its timeout included).
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let mut builder = Request::post(destination.path_and_query())
        .header(HOST, destination.authority())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, AGENT);
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    let request = builder.body(Full::new(body)).map_err(|error| SendError::Http(error.to_string()))?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, SystemTime::now()));
    let excerpt = if status.is_success() { String::new() } else { excerpt(response.into_body()).await };
    Ok(Answer { status: status.as_u16(), retry_after, excerpt })
}

/// The start of a body, read up to [`MAX_BODY_BYTES`], as printable text.
async fn excerpt(mut body: hyper::body::Incoming) -> String {
    let mut read = Vec::new();
    while read.len() < MAX_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_BODY_BYTES - read.len();
                    read.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&read)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_TEXT_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    fn loopback_client(timeout: Duration) -> Client {
        Client::new(Policy::new(vec!["127.0.0.0/8".parse().unwrap()]), timeout, None).unwrap()
    }

    /// A server that reads one request and answers `answer`, then reports what it read.
    async fn one_answer(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks?key=k", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 8192];
            let mut read = 0;
            while !String::from_utf8_lossy(&request[..read]).contains("{\"a\":1}") {
                read += stream.read(&mut request[read..]).await.unwrap();
            }
            stream.write_all(answer).await.unwrap();
            String::from_utf8_lossy(&request[..read]).into_owned()
        });
        (url, served)
    }

    #[tokio::test]
    async fn posts_json_with_the_headers_and_reads_the_answer() {
        let (url, served) =
            one_answer(b"HTTP/1.1 503 Unavailable\r\nRetry-After: 7\r\nContent-Length: 14\r\n\r\nback\x1b[31m soon")
                .await;
        let client = loopback_client(Duration::from_secs(5));
        let destination = Policy::new(vec!["127.0.0.0/8".parse().unwrap()]).check_url(&url).unwrap();
        let answer = client
            .post(&destination, &[("webhook-id", "msg_1".into())], Bytes::from_static(br#"{"a":1}"#))
            .await
            .unwrap();
        assert_eq!(
            answer,
            Answer { status: 503, retry_after: Some(Duration::from_secs(7)), excerpt: "back [31m soon".into() }
        );
        let request = served.await.unwrap().to_lowercase();
        assert!(request.starts_with("post /hooks?key=k http/1.1\r\n"), "{request}");
        for header in [
            "webhook-id: msg_1",
            "content-type: application/json",
            "content-length: 7",
            "user-agent: attendance-deliver/",
        ] {
            assert!(request.contains(header), "{header} in {request}");
        }
    }

    #[tokio::test]
    async fn a_redirect_is_an_answer_and_silence_a_timeout() {
        let (url, _served) = one_answer(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let client = loopback_client(Duration::from_secs(5));
        let destination = Policy::new(vec!["127.0.0.0/8".parse().unwrap()]).check_url(&url).unwrap();
        let answer = client.post(&destination, &[], Bytes::from_static(br#"{"a":1}"#)).await.unwrap();
        assert_eq!(answer.status, 307);

        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", silent.local_addr().unwrap());
        let destination = Policy::new(vec!["127.0.0.0/8".parse().unwrap()]).check_url(&url).unwrap();
        let client = loopback_client(Duration::from_millis(200));
        let error = client.post(&destination, &[], Bytes::from_static(b"{}")).await.unwrap_err();
        assert!(matches!(error, SendError::Timeout(_)), "{error}");
        drop(silent);
    }

    #[tokio::test]
    async fn internal_addresses_are_never_connected_to() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let allowed = Policy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let destination = allowed.check_url(&format!("http://localhost:{port}/")).unwrap();
        let guarded = Client::new(Policy::default(), Duration::from_secs(2), None).unwrap();
        let error = guarded.post(&destination, &[], Bytes::from_static(b"{}")).await.unwrap_err();
        assert!(matches!(error, SendError::Refused(DestinationError::ResolvesToInternal { .. })), "{error}");
        assert_eq!(error.outcome(), "refused");
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was made");
    }
}
