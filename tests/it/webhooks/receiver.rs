//! The loopback receiver the webhook tests post to: a small hyper server (plain or TLS) that
//! records every request and answers as told (`Answer`): at once, slowly, with a status,
//! never, or with a redirect. Stopped, with its connections, when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;
use tokio::sync::watch;

use crate::support::WAIT;
use crate::support::tls::TestCert;

/// How the receiver answers each request.
#[derive(Debug, Clone)]
pub enum Answer {
    Ok,
    /// 200 after this long.
    Slow(Duration),
    Status(u16),
    /// Reads the request, then never answers.
    Never,
    /// 302 to this URL.
    Redirect(String),
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A loopback HTTP server that records every request; stopped (with its connections) when
/// dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Mutex<Vec<Received>>>,
    count: watch::Receiver<usize>,
    /// TCP connections accepted, TLS handshakes that failed included.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(answer: Answer) -> Receiver {
        Receiver::serve(answer, None).await
    }

    /// Over TLS with `cert` (self-signed: trusted by no root store).
    pub async fn start_tls(answer: Answer, cert: &TestCert) -> Receiver {
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
        Receiver::serve(answer, Some(acceptor)).await
    }

    async fn serve(answer: Answer, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (counter, count) = watch::channel(0);
        let counter = Arc::new(counter);
        let (a, s) = (answer.clone(), seen.clone());
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task closes them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (a, s, counter) = (a.clone(), s.clone(), counter.clone());
                let service = hyper::service::service_fn(move |request| {
                    handle(request, a.clone(), s.clone(), counter.clone())
                });
                let tls = tls.clone();
                connections.spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http.serve_connection(io, service).await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http.serve_connection(io, service).await;
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            answer,
            seen,
            count,
            connections,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// The first `n` requests, once they arrived (bounded by `WAIT`).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let mut count = self.count.clone();
        tokio::time::timeout(WAIT, count.wait_for(|&c| c >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} requests did not arrive; got {:?}", self.seen()))
            .unwrap();
        self.seen().into_iter().take(n).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    request: Request<Incoming>,
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Mutex<Vec<Received>>>,
    counter: Arc<watch::Sender<usize>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().push(Received {
        at,
        headers: parts.headers,
        body,
    });
    counter.send_modify(|c| *c += 1);
    let answer = answer.lock().unwrap().clone();
    let response = Response::builder();
    let response = match answer {
        Answer::Ok => response.status(200),
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            response.status(200)
        }
        Answer::Status(status) => response.status(status),
        Answer::Never => std::future::pending().await,
        Answer::Redirect(to) => response.status(302).header("location", to),
    };
    Ok(response.body(Full::new(Bytes::from_static(b"ok"))).unwrap())
}
