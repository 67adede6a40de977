//! A TCP relay on loopback in front of the gateway whose connections a test can cut (both
//! ends see them close) or freeze (nothing more passes and nothing closes, as when a laptop
//! lid shuts or a link dies), without touching the browser or the gateway.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    /// Bumped by `cut`: connections accepted before it end.
    generation: watch::Sender<u64>,
    /// Bumped by `freeze`: connections accepted before it stop relaying but stay open.
    frozen: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Relays every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (generation, _) = watch::channel(0u64);
        let watcher = generation.clone();
        let (frozen, _) = watch::channel(0u64);
        let freezer = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut cut = watcher.subscribe();
                let mut freeze = freezer.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                        _ = freeze.changed() => {
                            // Hold both sockets, read nothing, until cut (or the test ends).
                            let _ = cut.changed().await;
                        }
                    }
                    // Both sides are dropped here: each sees its connection end.
                });
            }
        });
        Proxy {
            addr,
            generation,
            frozen,
            task,
        }
    }

    /// Ends every connection open now; later ones pass as before.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Stops every connection open now without closing it; later ones pass as before.
    pub fn freeze(&self) {
        self.frozen.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
