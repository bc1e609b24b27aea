//! Accepting clients and running one task per connection.
//!
//! Life of a connection: accept → connection permit (limit, else 53300) →
//! [`stream::negotiate`] (SSLRequest, GSSENCRequest, direct TLS) → a pgwire
//! codec over the [`stream::Guarded`] stream → the message loop below, which
//! hands each frontend message to pgwire's dispatcher with this connection's
//! [`handler::ConnHandler`], closes idle sessions, and ends every session with
//! `57P01` when the server shuts down.
//!
//! Shutdown follows mini-redis: a `watch` flag tells connection tasks to stop
//! once their current statement ends; the server waits for all of them (each
//! holds a clone of an mpsc sender) up to a grace period, then cancels the
//! statements still running.

mod copy;
pub(crate) mod handler;
pub(crate) mod stream;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, DefaultClient, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{PgWireMessageServerCodec, process_error, process_message};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tracing::Instrument;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::SqlError;
use crate::rewrite::gate::ParseLimits;
use crate::session::{Session, SessionId};
use handler::ConnHandler;
use stream::{Guarded, MalformedMessage, MessageTooLarge, Negotiated};

/// The services a server is built from.
pub struct Services {
    pub engine: Arc<Engine>,
    pub auth: Arc<crate::auth::Authenticator>,
    pub policy: Arc<crate::policy::PolicyStore>,
    pub audit: crate::audit::Auditor,
}

/// State shared by every connection.
pub struct Shared {
    pub engine: Arc<Engine>,
    pub auth: Arc<crate::auth::Authenticator>,
    pub policy: Arc<crate::policy::PolicyStore>,
    pub audit: crate::audit::Auditor,
    pub parse_limits: ParseLimits,
    pub registry: Registry,
    /// Rewritten, planned statements shared by sessions with the same key.
    pub plans: Option<crate::enforce::PlanCache<handler::Prepared>>,
    /// Development switch: accept non-TLS clients from loopback addresses.
    pub allow_plaintext_loopback: bool,
    /// Statement timeout, row and concurrency caps by role.
    pub limits: Arc<crate::query::limits::Limits>,
}

impl Shared {
    pub fn plaintext_allowed(&self, peer: SocketAddr) -> bool {
        self.allow_plaintext_loopback && peer.ip().is_loopback()
    }
}

/// Live sessions by backend pid, for CancelRequest and shutdown.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    next_pid: i32,
    by_pid: HashMap<i32, (Bytes, Weak<Session>)>,
    pid_of: HashMap<SessionId, i32>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a session; returns its backend pid.
    pub fn register(&self, session: &Arc<Session>, secret: SecretKey) -> i32 {
        let mut g = self.lock();
        g.next_pid = if g.next_pid <= 0 || g.next_pid >= i32::MAX - 1 {
            1000
        } else {
            g.next_pid + 1
        };
        let pid = g.next_pid;
        g.by_pid
            .insert(pid, (secret.to_bytes(), Arc::downgrade(session)));
        g.pid_of.insert(session.id, pid);
        pid
    }

    pub fn unregister(&self, id: SessionId) {
        let mut g = self.lock();
        if let Some(pid) = g.pid_of.remove(&id) {
            g.by_pid.remove(&pid);
        }
    }

    pub fn pid_of(&self, id: SessionId) -> Option<i32> {
        self.lock().pid_of.get(&id).copied()
    }

    /// Cancel the running statement of the session with this pid and secret.
    pub fn cancel(&self, pid: i32, secret: &SecretKey) {
        let session = {
            let g = self.lock();
            match g.by_pid.get(&pid) {
                Some((s, w)) if constant_time_eq(s, &secret.to_bytes()) => w.upgrade(),
                _ => None,
            }
        };
        match session {
            Some(s) => {
                tracing::info!(session = %s.id, "cancel request");
                s.cancel_current();
            }
            None => tracing::debug!("cancel request for an unknown session"),
        }
    }

    /// Cancel every running statement (end of the shutdown grace period).
    pub fn cancel_all(&self) {
        let sessions: Vec<_> = self
            .lock()
            .by_pid
            .values()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        for s in sessions {
            s.cancel_current();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A running lakeward server.
pub struct Server {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    config: Config,
}

impl Server {
    pub fn new(config: Config, services: Services, tls: Option<TlsAcceptor>) -> Server {
        let Services {
            engine,
            auth,
            policy,
            audit,
        } = services;
        let shared = Arc::new(Shared {
            engine,
            auth,
            policy,
            audit,
            parse_limits: ParseLimits {
                max_nesting: config.server.max_sql_nesting,
                max_sql_bytes: config.server.max_message_bytes,
            },
            registry: Registry::default(),
            plans: (config.server.plan_cache_entries > 0 && config.server.plan_cache_mb > 0).then(
                || {
                    crate::enforce::plan_cache(
                        config.server.plan_cache_entries,
                        config.server.plan_cache_mb.saturating_mul(1024 * 1024),
                    )
                },
            ),
            allow_plaintext_loopback: config.tls.allow_plaintext_loopback,
            limits: Arc::new(
                crate::query::limits::Limits::from_config(&config.limits)
                    .with_observer(|e| crate::metrics::Metrics::global().limit_exceeded(e.into())),
            ),
        });
        Server {
            shared,
            tls,
            config,
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serve until `shutdown` completes, then drain.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(self.config.server.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);

        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permit = limit.clone().try_acquire_owned().ok();
            let conn = Connection {
                shared: self.shared.clone(),
                tls: self.tls.clone(),
                config: self.config.server.clone(),
                stop: stop_rx.clone(),
                _done: done_tx.clone(),
            };
            // One span per connection: the session id is recorded once the
            // startup succeeds. Client address and ids only, never data.
            let span = tracing::info_span!(
                "connection",
                client = %peer.ip(),
                session = tracing::field::Empty,
            );
            let gauge = crate::metrics::Metrics::global().connection_opened();
            tokio::spawn(
                async move {
                    let _gauge = gauge;
                    match permit {
                        Some(_permit) => conn.serve(tcp, peer).await,
                        None => conn.refuse(tcp, SqlError::too_many_connections()).await,
                    }
                }
                .instrument(span),
            );
        }

        // Close the listener: new clients are refused at once instead of
        // waiting in the backlog while running statements drain.
        drop(listener);
        tracing::info!("shutting down: no new connections, waiting for running statements");
        let _ = stop_tx.send(true);
        drop(done_tx);
        let grace = self.config.server.shutdown_grace();
        if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
            tracing::warn!("grace period over: cancelling running statements");
            self.shared.registry.cancel_all();
            let _ = tokio::time::timeout(Duration::from_secs(5), done_rx.recv()).await;
        }
        // A final signed checkpoint, and every record into the audit table.
        self.shared.audit.close().await;
        tracing::info!("shutdown complete");
    }
}

type Socket = Framed<Guarded, PgWireMessageServerCodec<handler::Prepared>>;

struct Connection {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    config: crate::config::ServerConfig,
    stop: watch::Receiver<bool>,
    /// Dropped when the task ends; the server waits for all of them.
    _done: mpsc::Sender<()>,
}

impl Connection {
    /// Answer a client we will not serve with a FATAL error before its startup.
    async fn refuse(self, tcp: TcpStream, err: SqlError) {
        let peer = tcp.peer_addr().ok();
        let fut = async {
            let Negotiated::Stream(stream) = stream::negotiate(tcp, self.tls.as_ref()).await?
            else {
                return Ok::<_, std::io::Error>(());
            };
            let addr = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            let mut socket = new_socket(stream, addr, self.config.max_message_bytes);
            // Read the startup packet so the client is ready to read our answer.
            let _ = socket.next().await;
            let _ = socket.send(error_message(err)).await;
            Ok(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), fut).await;
    }

    async fn serve(mut self, tcp: TcpStream, peer: SocketAddr) {
        let startup_deadline = tokio::time::Instant::now() + self.config.startup_timeout();
        let negotiated =
            tokio::time::timeout_at(startup_deadline, stream::negotiate(tcp, self.tls.as_ref()))
                .await;
        let stream = match negotiated {
            Ok(Ok(Negotiated::Stream(s))) => s,
            Ok(Ok(Negotiated::Closed)) => return,
            Ok(Err(e)) => {
                tracing::debug!(client = %peer.ip(), error = %e, "TLS negotiation failed");
                return;
            }
            Err(_) => {
                tracing::debug!(client = %peer.ip(), "startup timeout during negotiation");
                return;
            }
        };
        let mut socket = new_socket(stream, peer, self.config.max_message_bytes);
        let handler = Arc::new(ConnHandler::new(self.shared.clone()));
        let noop = Arc::new(pgwire::api::NoopHandler);
        let mut span_has_session = false;
        let mut mid_sequence = false;

        loop {
            let starting = matches!(
                socket.state(),
                PgWireConnectionState::AwaitingStartup
                    | PgWireConnectionState::AuthenticationInProgress
            );
            let idle = if starting {
                Some(startup_deadline.saturating_duration_since(tokio::time::Instant::now()))
            } else {
                self.config.idle_timeout()
            };
            // Between statements the session ends at once when the server
            // stops; inside an extended-query sequence (Parse … Sync) the
            // sequence is finished first, so a statement that ran to its end
            // during the drain gets its ReadyForQuery.
            // A portal or cursor left suspended too long is closed while
            // the client is silent (limits.idle_portal_timeout_secs).
            let portal_expiry = if starting {
                None
            } else {
                handler.next_portal_expiry()
            };
            let next = tokio::select! {
                biased;
                _ = wait_stop(&mut self.stop), if !mid_sequence => {
                    let _ = socket.send(error_message(SqlError::shutting_down())).await;
                    break;
                }
                _ = sleep_until(portal_expiry), if portal_expiry.is_some() => {
                    handler.expire_idle_portals(&socket);
                    continue;
                }
                m = next_message(&mut socket, idle) => m,
            };
            let msg = match next {
                Next::Message(m) => m,
                Next::Closed => break,
                Next::Idle => {
                    if !starting {
                        let e = SqlError::fatal(
                            "57P05",
                            "terminating connection due to idle-session timeout",
                        );
                        let _ = socket.send(error_message(e)).await;
                    }
                    break;
                }
                Next::TooLarge => {
                    let e = SqlError::fatal("08P01", "message too large");
                    let _ = socket.send(error_message(e)).await;
                    break;
                }
                Next::Malformed => {
                    tracing::debug!(client = %peer.ip(), "malformed frontend message");
                    let e = SqlError::fatal("08P01", "invalid frontend message: malformed body");
                    let _ = socket.send(error_message(e)).await;
                    break;
                }
                Next::Invalid(e) => {
                    tracing::debug!(client = %peer.ip(), error = %e, "invalid frontend message");
                    let info: ErrorInfo = e.into();
                    let e = SqlError::fatal(
                        "08P01",
                        format!("invalid frontend message ({})", info.code),
                    );
                    let _ = socket.send(error_message(e)).await;
                    break;
                }
            };
            if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
                break;
            }
            let extended = msg.is_extended_query();
            mid_sequence = extended && !matches!(msg, PgWireFrontendMessage::Sync(_));
            let result = process_message(
                msg,
                &mut socket,
                handler.clone(),
                handler.clone(),
                handler.clone(),
                noop.clone(),
                handler.clone(),
            )
            .await;
            if !span_has_session && let Some(session) = handler.session() {
                tracing::Span::current().record("session", tracing::field::display(session.id));
                span_has_session = true;
            }
            if let Err(e) = result {
                let info = sanitize(e);
                // A FATAL error ends the connection: PostgreSQL sends the
                // ErrorResponse alone, no ReadyForQuery after it (asyncpg
                // and libpq read one as a protocol violation).
                if info.is_fatal() {
                    let _ = socket
                        .send(PgWireBackendMessage::ErrorResponse(info.into()))
                        .await;
                    break;
                }
                if process_error(
                    &mut socket,
                    PgWireError::UserError(Box::new(info)),
                    extended,
                )
                .await
                .is_err()
                {
                    break;
                }
            }
        }
        if let Some(session) = handler.session() {
            self.shared.registry.unregister(session.id);
            tracing::info!(session = %session.id, "session ended");
        }
        let _ = socket.close().await;
    }
}

/// Completes at `deadline`, or never.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Completes when the server starts shutting down.
async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn new_socket(stream: stream::ClientStream, addr: SocketAddr, max_message_bytes: usize) -> Socket {
    let secure = stream.is_tls();
    let client = DefaultClient::new(addr, secure);
    let mut socket = Framed::new(
        Guarded::new(stream, max_message_bytes),
        PgWireMessageServerCodec::new(client),
    );
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    // Rows are written out in 64 KiB chunks (tokio-util's default is 8 KiB):
    // fewer flushes, TLS records and system calls for large results, and
    // still a small, bounded buffer per connection.
    socket.set_backpressure_boundary(64 * 1024);
    socket
}

enum Next {
    Message(PgWireFrontendMessage),
    Closed,
    Idle,
    TooLarge,
    /// A Parse, Bind, Describe, Close or Execute message shorter than its
    /// fields.
    Malformed,
    Invalid(PgWireError),
}

async fn next_message(socket: &mut Socket, timeout: Option<Duration>) -> Next {
    let read = socket.next();
    let item = match timeout {
        Some(t) => match tokio::time::timeout(t, read).await {
            Ok(i) => i,
            Err(_) => return Next::Idle,
        },
        None => read.await,
    };
    match item {
        None => Next::Closed,
        Some(Ok(m)) => Next::Message(m),
        Some(Err(PgWireError::IoError(e))) => {
            let inner = e.get_ref();
            if inner.is_some_and(|inner| inner.is::<MessageTooLarge>()) {
                Next::TooLarge
            } else if inner.is_some_and(|inner| inner.is::<MalformedMessage>()) {
                Next::Malformed
            } else {
                Next::Closed
            }
        }
        Some(Err(PgWireError::MessageTooLarge(..))) => Next::TooLarge,
        Some(Err(e)) => Next::Invalid(e),
    }
}

/// Errors going to a client pass through here: `UserError`s are ours and
/// already sanitised; pgwire's own protocol errors keep their SQLSTATE with a
/// fixed message; `ApiError`s (a library error we did not map) never leave.
fn sanitize(e: PgWireError) -> ErrorInfo {
    match e {
        PgWireError::UserError(info) => *info,
        PgWireError::ApiError(inner) => {
            tracing::warn!(error_kind = %std::any::type_name_of_val(&*inner), "unmapped error");
            ErrorInfo::new("ERROR".into(), "XX000".into(), "internal error".into())
        }
        PgWireError::NotReadyForQuery => {
            ErrorInfo::new("ERROR".into(), "08P01".into(), "not ready for query".into())
        }
        PgWireError::PortalNotFound(_) => ErrorInfo::new(
            "ERROR".into(),
            "34000".into(),
            "portal does not exist".into(),
        ),
        PgWireError::StatementNotFound(_) => ErrorInfo::new(
            "ERROR".into(),
            "26000".into(),
            "prepared statement does not exist".into(),
        ),
        other => {
            let info: ErrorInfo = other.into();
            let severity = info.severity.clone();
            let code = info.code.clone();
            let message = match code.as_str() {
                "22P02" | "22023" => "invalid parameter value".to_owned(),
                _ => format!("protocol error ({code})"),
            };
            ErrorInfo::new(severity, code, message)
        }
    }
}

fn error_message(e: SqlError) -> PgWireBackendMessage {
    let severity = if e.fatal { "FATAL" } else { "ERROR" };
    let info = ErrorInfo::new(severity.into(), e.code.into(), e.message);
    PgWireBackendMessage::ErrorResponse(info.into())
}

/// Bind the listener and serve `config` until `shutdown` completes.
///
/// `cert` is the certificate to serve (from `[tls]`, reloadable); `None`
/// loads it from `config` when configured.
pub async fn serve(
    config: Config,
    services: Services,
    cert: Option<Arc<tls::ServerCert>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let cert = match (cert, &config.tls.cert_file, &config.tls.key_file) {
        (Some(c), _, _) => Some(c),
        (None, Some(c), Some(k)) => Some(Arc::new(tls::ServerCert::load(c, k)?)),
        _ => None,
    };
    let tls = cert.as_ref().map(|c| c.acceptor()).transpose()?;
    let listener = TcpListener::bind(config.server.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, tls = tls.is_some(), "lakeward listening");
    Server::new(config, services, tls)
        .run(listener, shutdown)
        .await;
    Ok(())
}
