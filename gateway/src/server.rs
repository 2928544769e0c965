//! The HTTP server under the routes: what an Internet-facing listener needs and `axum::serve`
//! does not give (it runs hyper without a timer, so no timeout applies to a connection that
//! sends half a request and waits, and it accepts without bound).
//!
//! - At most `max_connections` connections are open at once; past it the listener stops
//!   accepting until one closes (the kernel's backlog holds the rest), so file descriptors and
//!   per-connection buffers stay bounded.
//! - A connection must deliver a request's headers within `header_timeout` of waiting for them,
//!   the first request's and every later one's on a kept-alive connection: an idle or trickling
//!   connection is closed, never held.
//! - Request heads are bounded (`max_header_bytes`, hyper's count of headers).
//!
//! Bodies are bounded by the handlers that read them (size, time and the shared memory budget
//! in [`crate::limits`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How connections are bounded.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Connections open at once; past it new ones wait in the kernel's backlog. Each costs a file
    /// descriptor and about 25 KiB while it waits for its headers (measured: README).
    #[arg(long = "http-max-connections", env = "HTTP_MAX_CONNECTIONS", default_value_t = 2_048)]
    pub max_connections: usize,
    /// Longest a connection may take to send a request's headers, counted from when the server
    /// waits for them: it also closes kept-alive connections idle that long.
    #[arg(long = "http-header-timeout", env = "HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = shared::runtime::config::parse_duration)]
    pub header_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; larger ones get 431.
    #[arg(long = "http-max-header-bytes", env = "HTTP_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets every open
/// connection finish its request in flight and waits for them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ConnectionArgs,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's read buffer holds the head; it must be at least its minimum (8 KiB + 1).
        .max_buf_size(limits.max_header_bytes.max(8 * 1024 + 1));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // go on, after a pause when the process itself is short of something.
                    if !is_connection_error(&error) {
                        tracing::warn!(%error, "accepting a connection failed; retrying in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    // New connections are refused from now on, while the open ones finish.
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
