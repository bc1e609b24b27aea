//! The admin HTTP endpoint, on its own listener (`[admin] listen`, loopback
//! by default), apart from the PostgreSQL port:
//!
//! - `GET /metrics`: the process's metrics as OpenMetrics text;
//! - `GET /health`: liveness, `200 ok` while the process serves HTTP;
//! - `GET /ready`: readiness, `200` with a JSON report when the policy, the
//!   tables and the audit log are ready and the server is not draining,
//!   else `503` with the same report.
//!
//! Any other path is `404`; another method than `GET` (or `HEAD`) on a known
//! path is `405`. Nothing here reads a request body or echoes a request: the
//! answers are fixed texts, the metrics and the readiness flags. Each
//! connection is served by its own task with a header read timeout and a
//! lifetime cap; at most [`AdminLimits::max_connections`] are served at once,
//! further ones are closed on accept.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::metrics::Metrics;

/// The media type of the OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin endpoint serves.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<Readiness>,
}

impl AdminState {
    pub fn new(metrics: Arc<Metrics>, ready: Arc<Readiness>) -> AdminState {
        AdminState { metrics, ready }
    }
}

/// Whether this instance should receive clients: set by the server as its
/// parts come up (policy loaded, tables opened, audit log writable) and when
/// it starts draining for shutdown.
#[derive(Default)]
pub struct Readiness {
    policy_loaded: AtomicBool,
    tables_loaded: AtomicBool,
    audit_ready: AtomicBool,
    draining: AtomicBool,
    /// Asked at each readiness check, beside `audit_ready`: is the audit
    /// store writable now ([`crate::audit::Auditor::healthy`])?
    audit_probe: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
    /// The engine's memory budget and what running statements reserve of
    /// it now, in bytes: reported, never a reason to be unready.
    memory_probe: OnceLock<Box<dyn Fn() -> (u64, u64) + Send + Sync>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("policy", &self.policy_loaded())
            .field("tables", &self.tables_loaded())
            .field("audit", &self.audit_ready())
            .field("draining", &self.draining())
            .finish()
    }
}

impl Readiness {
    /// Nothing ready yet.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    pub fn set_policy_loaded(&self, v: bool) {
        self.policy_loaded.store(v, Ordering::Relaxed);
    }

    pub fn set_tables_loaded(&self, v: bool) {
        self.tables_loaded.store(v, Ordering::Relaxed);
    }

    pub fn set_audit_ready(&self, v: bool) {
        self.audit_ready.store(v, Ordering::Relaxed);
    }

    /// The server is shutting down: not ready, whatever else holds.
    pub fn set_draining(&self, v: bool) {
        self.draining.store(v, Ordering::Relaxed);
    }

    /// A live check of the audit store, asked at every readiness check on
    /// top of [`Readiness::set_audit_ready`]. Set once; returns whether this
    /// call set it.
    pub fn set_audit_probe(&self, probe: impl Fn() -> bool + Send + Sync + 'static) -> bool {
        self.audit_probe.set(Box::new(probe)).is_ok()
    }

    /// Report the engine's memory budget and reservation (`(limit,
    /// reserved)` bytes) in `/ready`. Set once.
    pub fn set_memory_probe(&self, probe: impl Fn() -> (u64, u64) + Send + Sync + 'static) -> bool {
        self.memory_probe.set(Box::new(probe)).is_ok()
    }

    pub fn policy_loaded(&self) -> bool {
        self.policy_loaded.load(Ordering::Relaxed)
    }

    pub fn tables_loaded(&self) -> bool {
        self.tables_loaded.load(Ordering::Relaxed)
    }

    /// The audit log was opened and, when a probe is set, is writable now.
    pub fn audit_ready(&self) -> bool {
        self.audit_ready.load(Ordering::Relaxed) && self.audit_probe.get().is_none_or(|p| p())
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Ready for clients: everything up, and not draining.
    pub fn is_ready(&self) -> bool {
        self.policy_loaded() && self.tables_loaded() && self.audit_ready() && !self.draining()
    }

    /// The flags as JSON: `{"policy":true,"tables":true,"audit":true,"draining":false}`.
    pub fn report(&self) -> String {
        self.report_and_ready().0
    }

    /// The report and the readiness it shows, from one reading of the flags.
    fn report_and_ready(&self) -> (String, bool) {
        let (policy, tables, audit, draining) = (
            self.policy_loaded(),
            self.tables_loaded(),
            self.audit_ready(),
            self.draining(),
        );
        let memory = match self.memory_probe.get() {
            Some(probe) => {
                let (limit, reserved) = probe();
                format!(",\"memory\":{{\"limit_bytes\":{limit},\"reserved_bytes\":{reserved}}}")
            }
            None => String::new(),
        };
        let report = format!(
            "{{\"policy\":{policy},\"tables\":{tables},\"audit\":{audit},\"draining\":{draining}{memory}}}"
        );
        (report, policy && tables && audit && !draining)
    }
}

/// Bounds on the admin endpoint's resources.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// A client must send its request headers within this time (also the
    /// idle time allowed before the first request).
    pub header_read_timeout: Duration,
    /// A connection is closed after this time, whatever it is doing.
    pub connection_lifetime: Duration,
    /// After shutdown, how long [`serve_with`] waits for open connections.
    pub drain_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Serve the admin endpoint on `listener` until `shutdown` completes, with
/// the default [`AdminLimits`].
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve_with(listener, state, shutdown, AdminLimits::default()).await
}

/// [`serve`] with explicit limits. Returns once `shutdown` has completed and
/// the open connections have finished (or [`AdminLimits::drain_timeout`]
/// has passed).
pub async fn serve_with(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: AdminLimits,
) {
    let max = limits.max_connections.clamp(1, 4096);
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Ok(addr) = listener.local_addr() {
        tracing::debug!(listen = %addr, "admin endpoint listening");
    }
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::debug!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("admin connection limit reached: connection closed");
            drop(tcp);
            continue;
        };
        let state = state.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            serve_connection(tcp, state, stop, limits).await;
            drop(permit);
        });
    }

    // Open connections finish their request and close; wait for them
    // (every permit back), for a while.
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::debug!("admin endpoint stopped with connections still open");
    }
}

/// One HTTP/1.1 connection: one request (no keep-alive), bounded in time.
async fn serve_connection(
    tcp: TcpStream,
    state: Arc<AdminState>,
    mut stop: watch::Receiver<bool>,
    limits: AdminLimits,
) {
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(tcp);
    let service = service_fn(move |req: Request<Incoming>| {
        std::future::ready(Ok::<_, Infallible>(respond(
            &state,
            req.method(),
            req.uri().path(),
        )))
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false)
        .max_buf_size(16 * 1024);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let lifetime = tokio::time::sleep(limits.connection_lifetime);
    tokio::pin!(lifetime);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
                return;
            }
            _ = &mut lifetime => {
                tracing::debug!("admin connection closed: lifetime exceeded");
                return;
            }
            _ = stop.changed(), if !draining => {
                // Finish the request in flight, then close.
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

enum Route {
    Metrics,
    Health,
    Ready,
}

/// The answer to one request, from its method and path only.
fn respond(state: &AdminState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let route = match path {
        "/metrics" => Route::Metrics,
        "/health" => Route::Health,
        "/ready" => Route::Ready,
        _ => {
            return reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found\n",
            );
        }
    };
    if *method != Method::GET && *method != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "method not allowed\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match route {
        Route::Metrics => match state.metrics.try_encode() {
            Ok(text) => reply(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, text),
            Err(_) => {
                tracing::debug!("metrics could not be encoded");
                reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    "metrics unavailable\n",
                )
            }
        },
        Route::Health => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        Route::Ready => {
            let (report, ready) = state.ready.report_and_ready();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "application/json", report)
        }
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    struct Running {
        addr: SocketAddr,
        state: Arc<AdminState>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    async fn start(limits: AdminLimits) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(AdminState::new(
            Arc::new(Metrics::new()),
            Arc::new(Readiness::new()),
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(
            listener,
            state.clone(),
            async move {
                let _ = stopped.await;
            },
            limits,
        ));
        Running {
            addr,
            state,
            stop,
            task,
        }
    }

    fn set_all_ready(r: &Readiness) {
        r.set_policy_loaded(true);
        r.set_tables_loaded(true);
        r.set_audit_ready(true);
    }

    async fn request(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn status_line(response: &str) -> &str {
        response.lines().next().unwrap_or("")
    }

    fn body(response: &str) -> &str {
        response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    fn has_header(response: &str, name: &str, value: &str) -> bool {
        let head = response.split_once("\r\n\r\n").map_or(response, |(h, _)| h);
        head.lines().skip(1).any(|l| {
            l.split_once(':')
                .is_some_and(|(n, v)| n.trim().eq_ignore_ascii_case(name) && v.trim() == value)
        })
    }

    #[tokio::test]
    async fn routes() {
        let server = start(AdminLimits::default()).await;
        set_all_ready(&server.state.ready);
        server
            .state
            .metrics
            .set_table_version("clinical.patients", 3);

        let r = request(server.addr, "GET", "/metrics").await;
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK", "{r}");
        assert!(
            has_header(&r, "content-type", OPENMETRICS_CONTENT_TYPE),
            "{r}"
        );
        assert!(body(&r).contains("# TYPE lakeward_connections_active gauge"));
        assert!(body(&r).contains("lakeward_delta_table_version{table=\"clinical.patients\"} 3"));
        assert!(body(&r).ends_with("# EOF\n"));

        let r = request(server.addr, "GET", "/health").await;
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK", "{r}");
        assert_eq!(body(&r), "ok\n");

        let r = request(server.addr, "GET", "/ready").await;
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK", "{r}");
        assert!(has_header(&r, "content-type", "application/json"), "{r}");
        assert_eq!(
            body(&r),
            r#"{"policy":true,"tables":true,"audit":true,"draining":false}"#
        );

        // A query string does not change the route.
        let r = request(server.addr, "GET", "/health?verbose=1").await;
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK", "{r}");

        let r = request(server.addr, "HEAD", "/health").await;
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK", "{r}");
        assert_eq!(body(&r), "");

        let r = request(server.addr, "GET", "/nope").await;
        assert_eq!(status_line(&r), "HTTP/1.1 404 Not Found", "{r}");
        let r = request(server.addr, "GET", "/metrics/extra").await;
        assert_eq!(status_line(&r), "HTTP/1.1 404 Not Found", "{r}");

        for (method, path) in [
            ("POST", "/metrics"),
            ("DELETE", "/ready"),
            ("PUT", "/health"),
        ] {
            let r = request(server.addr, method, path).await;
            assert_eq!(
                status_line(&r),
                "HTTP/1.1 405 Method Not Allowed",
                "{method} {path}: {r}"
            );
            assert!(has_header(&r, "allow", "GET, HEAD"), "{r}");
        }

        let _ = server.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), server.task)
            .await
            .expect("serve ends after shutdown")
            .expect("serve does not panic");
    }

    #[tokio::test]
    async fn not_ready_is_503_with_the_report() {
        let server = start(AdminLimits::default()).await;
        let r = request(server.addr, "GET", "/ready").await;
        assert_eq!(status_line(&r), "HTTP/1.1 503 Service Unavailable", "{r}");
        assert_eq!(
            body(&r),
            r#"{"policy":false,"tables":false,"audit":false,"draining":false}"#
        );

        set_all_ready(&server.state.ready);
        assert!(server.state.ready.is_ready());
        server.state.ready.set_draining(true);
        assert!(!server.state.ready.is_ready());
        let r = request(server.addr, "GET", "/ready").await;
        assert_eq!(status_line(&r), "HTTP/1.1 503 Service Unavailable", "{r}");
        assert_eq!(
            body(&r),
            r#"{"policy":true,"tables":true,"audit":true,"draining":true}"#
        );

        // A failing audit probe makes the instance unready.
        server.state.ready.set_draining(false);
        assert!(server.state.ready.set_audit_probe(|| false));
        assert!(!server.state.ready.set_audit_probe(|| true));
        let r = request(server.addr, "GET", "/ready").await;
        assert_eq!(status_line(&r), "HTTP/1.1 503 Service Unavailable", "{r}");
        assert!(body(&r).contains(r#""audit":false"#), "{r}");

        // Liveness does not depend on readiness.
        let r = request(server.addr, "GET", "/health").await;
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK", "{r}");
        let _ = server.stop.send(());
    }

    #[tokio::test]
    async fn silent_client_is_closed_after_the_header_timeout() {
        let server = start(AdminLimits {
            header_read_timeout: Duration::from_millis(200),
            ..AdminLimits::default()
        })
        .await;
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "connection still open after the header timeout"
        );
        let _ = server.stop.send(());
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed() {
        let server = start(AdminLimits {
            max_connections: 1,
            ..AdminLimits::default()
        })
        .await;
        // An idle connection holds the only permit.
        let idle = TcpStream::connect(server.addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut refused = TcpStream::connect(server.addr).await.expect("connect");
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), refused.read_to_end(&mut buf))
            .await
            .expect("closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{buf:?}");
        // Once the idle client leaves, requests are served again.
        drop(idle);
        let mut served = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut s = TcpStream::connect(server.addr).await.expect("connect");
            let req = "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
            if s.write_all(req.as_bytes()).await.is_err() {
                continue;
            }
            let mut buf = Vec::new();
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await
                && String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200 OK")
            {
                served = true;
                break;
            }
        }
        assert!(served, "the permit of a closed connection is returned");
        let _ = server.stop.send(());
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_flight_finish() {
        let server = start(AdminLimits::default()).await;
        // Headers sent in two parts: shutdown arrives between them.
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(b"GET /health HTTP/1.1\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = server.stop.send(());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = s
            .write_all(b"Host: localhost\r\nConnection: close\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        // Either the request was answered or the connection was closed
        // cleanly; in both cases serve returns.
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 200 OK"),
            "{text}"
        );
        tokio::time::timeout(Duration::from_secs(10), server.task)
            .await
            .expect("serve ends after shutdown")
            .expect("serve does not panic");
    }

    #[test]
    fn report_is_json() {
        let r = Readiness::new();
        let v: serde_json::Value = serde_json::from_str(&r.report()).expect("json");
        assert_eq!(v["policy"], false);
        assert_eq!(v["draining"], false);
        r.set_policy_loaded(true);
        let v: serde_json::Value = serde_json::from_str(&r.report()).expect("json");
        assert_eq!(v["policy"], true);
        assert!(v.get("memory").is_none(), "no engine, no memory report");
        r.set_memory_probe(|| (64 << 20, 4096));
        let v: serde_json::Value = serde_json::from_str(&r.report()).expect("json");
        assert_eq!(v["memory"]["limit_bytes"], 64 << 20);
        assert_eq!(v["memory"]["reserved_bytes"], 4096);
    }
}
