//! The HTTP/1.1 server loop: accepts connections and serves the router on each, with the
//! limits axum's `serve` cannot set. A connection must send a request's headers within the
//! idle timeout — at its start and between keep-alive requests — or it is closed, so silent
//! sockets cannot pile up. Shutdown stops accepting, lets in-flight requests finish, and
//! waits for their connections to close.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// The parser's own ceilings, above [`super::guard`]'s: requests between the two get our
/// enveloped 431; beyond these the parser answers a bare 431 before any of our code runs.
const PARSER_MAX_HEADERS: usize = 256;
const PARSER_MAX_BUF: usize = 128 * 1024;

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .max_headers(PARSER_MAX_HEADERS)
        .max_buf_size(PARSER_MAX_BUF);
    // Every connection task holds a receiver of `stopping`; the sender learns from
    // `closed()` when the last one is gone.
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.oneshot(request).await.unwrap_or_else(|e| match e {})) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stopping = stopping_rx.clone();
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let mut draining = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, client.addr = %peer, "connection ended with an error");
                        }
                        break;
                    }
                    changed = stopping.changed(), if !draining => {
                        let _ = changed;
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(stopping);
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    drop(stopping_rx);
    stopping_tx.closed().await;
    Ok(())
}
