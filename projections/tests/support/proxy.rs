//! A TCP proxy on loopback that can freeze the connections it carries: the bytes stop
//! flowing both ways while both sockets stay open, which is what a network partition (or a
//! frozen peer) looks like to the two ends. Connections made after a freeze flow normally.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct FreezableProxy {
    pub port: u16,
    /// Connections numbered below this are frozen.
    frozen_below: Arc<AtomicU64>,
    /// How many connections were accepted (the next one's number).
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen_below = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let frozen_below = frozen_below.clone();
            let accepted = accepted.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let id = accepted.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                        continue;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pipe(id, client_read, server_write, frozen_below.clone()));
                    tokio::spawn(pipe(id, server_read, client_write, frozen_below.clone()));
                }
            }
        });
        FreezableProxy {
            port,
            frozen_below,
            accepted,
            task,
        }
    }

    /// Every connection open now stops carrying bytes, for good.
    pub fn freeze_open_connections(&self) {
        self.frozen_below
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    id: u64,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen_below: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if id < frozen_below.load(Ordering::SeqCst) {
            // Partitioned: hold both sockets open and never pass anything on.
            let _keep = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
