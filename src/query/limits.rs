//! Statement limits: a timeout, a cap on rows returned and a cap on
//! statements running at once, by role (`[limits]`, `[limits.roles.<role>]`).
//!
//! A limit that is hit ends the statement with PostgreSQL's SQLSTATE:
//! `57014` for the timeout (as `statement_timeout` does), `54000`
//! (program_limit_exceeded) for the row cap, `53000` (insufficient_resources)
//! for the concurrency cap. The error is the statement's outcome in the
//! audit log like any other.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;
use crate::error::SqlError;

/// The limits one statement runs under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatementLimits {
    pub timeout: Option<Duration>,
    pub max_rows: Option<u64>,
    pub max_concurrent: Option<usize>,
    /// Bytes the role's running statements may hold together.
    pub max_memory: Option<usize>,
}

/// Which limit a statement hit (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    StatementTimeout,
    MaxRows,
    MaxConcurrentStatements,
}

impl Exceeded {
    pub fn as_str(self) -> &'static str {
        match self {
            Exceeded::StatementTimeout => "statement_timeout",
            Exceeded::MaxRows => "max_rows",
            Exceeded::MaxConcurrentStatements => "max_concurrent_statements",
        }
    }
}

/// The metric label of a limit (`lakeward_limits_exceeded_total{limit}`).
impl From<Exceeded> for crate::metrics::Limit {
    fn from(e: Exceeded) -> Self {
        use crate::metrics::Limit;
        use Exceeded as E;
        match e {
            E::StatementTimeout => Limit::StatementTimeout,
            E::MaxRows => Limit::MaxRows,
            E::MaxConcurrentStatements => Limit::MaxConcurrentStatements,
        }
    }
}

/// The configured limits and the running-statement counts per role.
#[derive(Debug, Default)]
pub struct Limits {
    default: StatementLimits,
    roles: HashMap<String, StatementLimits>,
    running: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Called when a limit ends a statement (metrics).
    on_exceeded: Option<fn(Exceeded)>,
    /// How long a suspended portal may wait for its next Execute or FETCH.
    idle_portal_timeout: Option<Duration>,
}

/// `n` MiB in bytes, `None` for 0.
fn mib(n: u64) -> Option<usize> {
    (n > 0).then(|| usize::try_from(n.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX))
}

fn nonzero_secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

impl Limits {
    pub fn from_config(config: &LimitsConfig) -> Limits {
        let default = StatementLimits {
            timeout: nonzero_secs(config.statement_timeout_secs),
            max_rows: (config.max_rows > 0).then_some(config.max_rows),
            max_concurrent: (config.max_concurrent_statements > 0)
                .then_some(config.max_concurrent_statements),
            max_memory: mib(config.max_memory_mb),
        };
        let roles = config
            .roles
            .iter()
            .map(|(role, o)| {
                let limits = StatementLimits {
                    timeout: o
                        .statement_timeout_secs
                        .map_or(default.timeout, nonzero_secs),
                    max_rows: o
                        .max_rows
                        .map_or(default.max_rows, |n| (n > 0).then_some(n)),
                    max_concurrent: o
                        .max_concurrent_statements
                        .map_or(default.max_concurrent, |n| (n > 0).then_some(n)),
                    max_memory: o.max_memory_mb.map_or(default.max_memory, mib),
                };
                (role.clone(), limits)
            })
            .collect();
        Limits {
            default,
            roles,
            running: Mutex::default(),
            on_exceeded: None,
            idle_portal_timeout: nonzero_secs(config.idle_portal_timeout_secs),
        }
    }

    /// Report every limit hit to `f` (the metrics registry).
    pub fn with_observer(mut self, f: fn(Exceeded)) -> Limits {
        self.on_exceeded = Some(f);
        self
    }

    /// The limits for a session of `role` (`None`: a session without a
    /// known role, which reads nothing; the defaults apply).
    /// How long a suspended portal or cursor may stay idle (`None`: for
    /// ever).
    pub fn idle_portal_timeout(&self) -> Option<Duration> {
        self.idle_portal_timeout
    }

    pub fn for_role(&self, role: Option<&str>) -> StatementLimits {
        role.and_then(|r| self.roles.get(r))
            .copied()
            .unwrap_or(self.default)
    }

    pub(crate) fn exceeded(&self, which: Exceeded) -> SqlError {
        if let Some(f) = self.on_exceeded {
            f(which);
        }
        match which {
            Exceeded::StatementTimeout => {
                SqlError::new("57014", "canceling statement due to statement timeout")
            }
            Exceeded::MaxRows => SqlError::new(
                "54000",
                "statement returned more rows than this role may receive (limits.max_rows)",
            ),
            Exceeded::MaxConcurrentStatements => SqlError::new(
                "53000",
                "too many statements of this role are running (limits.max_concurrent_statements)",
            ),
        }
    }

    /// A slot for one running statement of `role`, held until the
    /// statement's rows are all sent (or it fails). `Ok(None)`: no cap.
    pub fn admit(
        &self,
        role: Option<&str>,
        limits: &StatementLimits,
    ) -> Result<Option<OwnedSemaphorePermit>, SqlError> {
        let Some(cap) = limits.max_concurrent else {
            return Ok(None);
        };
        let key = role.unwrap_or("").to_owned();
        let semaphore = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            running
                .entry(key)
                .or_insert_with(|| Arc::new(Semaphore::new(cap)))
                .clone()
        };
        semaphore
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| self.exceeded(Exceeded::MaxConcurrentStatements))
    }
}

/// A statement's row stream under its limits: ends with `54000` before the
/// row past `max_rows`, with `57014` when `deadline` passes, and releases
/// the concurrency slot when it ends or is dropped.
pub(crate) struct Limited<S> {
    inner: S,
    rows: u64,
    max_rows: Option<u64>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    limits: Arc<Limits>,
    permit: Option<OwnedSemaphorePermit>,
    done: bool,
}

impl<S> Limited<S> {
    pub(crate) fn new(
        inner: S,
        limits: Arc<Limits>,
        statement: &StatementLimits,
        deadline: Option<tokio::time::Instant>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Limited<S> {
        Limited {
            inner,
            rows: 0,
            max_rows: statement.max_rows,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            limits,
            permit,
            done: false,
        }
    }

    fn finish<T>(
        &mut self,
        which: Exceeded,
    ) -> Poll<Option<Result<T, pgwire::error::PgWireError>>> {
        self.done = true;
        self.permit = None;
        Poll::Ready(Some(Err(self.limits.exceeded(which).into_pgwire())))
    }
}

impl<S, T> Stream for Limited<S>
where
    S: Stream<Item = Result<T, pgwire::error::PgWireError>> + Unpin,
{
    type Item = Result<T, pgwire::error::PgWireError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(d) = this.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            return this.finish(Exceeded::StatementTimeout);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(row))) => {
                this.rows += 1;
                if this.max_rows.is_some_and(|m| this.rows > m) {
                    return this.finish(Exceeded::MaxRows);
                }
                Poll::Ready(Some(Ok(row)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                this.permit = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done = true;
                this.permit = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoleLimitsConfig;
    use futures::StreamExt;

    fn config() -> LimitsConfig {
        let mut c = LimitsConfig {
            statement_timeout_secs: 60,
            max_rows: 0,
            max_concurrent_statements: 0,
            idle_portal_timeout_secs: 300,
            max_memory_mb: 0,
            roles: Default::default(),
        };
        c.roles.insert(
            "researcher".into(),
            RoleLimitsConfig {
                max_rows: Some(3),
                max_concurrent_statements: Some(1),
                statement_timeout_secs: Some(0),
                max_memory_mb: Some(64),
            },
        );
        c
    }

    #[test]
    fn role_overrides_fall_back_to_the_defaults() {
        let l = Limits::from_config(&config());
        let analyst = l.for_role(Some("analyst"));
        assert_eq!(analyst.timeout, Some(Duration::from_secs(60)));
        assert_eq!(analyst.max_rows, None);
        let researcher = l.for_role(Some("researcher"));
        assert_eq!(researcher.timeout, None, "0 turns the default off");
        assert_eq!(researcher.max_rows, Some(3));
        assert_eq!(researcher.max_concurrent, Some(1));
        assert_eq!(researcher.max_memory, Some(64 * 1024 * 1024));
        assert_eq!(analyst.max_memory, None, "0 is no role budget");
        assert_eq!(l.for_role(None), analyst);
    }

    #[test]
    fn the_concurrency_cap_admits_up_to_its_size_and_frees_on_drop() {
        let l = Limits::from_config(&config());
        let r = l.for_role(Some("researcher"));
        let first = l
            .admit(Some("researcher"), &r)
            .expect("first")
            .expect("capped");
        let second = l
            .admit(Some("researcher"), &r)
            .err()
            .expect("second refused");
        assert_eq!(second.code, "53000");
        drop(first);
        assert!(l.admit(Some("researcher"), &r).is_ok());
        let a = l.for_role(Some("analyst"));
        assert!(l.admit(Some("analyst"), &a).expect("no cap").is_none());
    }

    #[tokio::test]
    async fn rows_past_the_cap_end_the_stream_with_54000() {
        let l = Arc::new(Limits::from_config(&config()));
        let r = l.for_role(Some("researcher"));
        let rows = futures::stream::iter((0..10).map(Ok::<i32, pgwire::error::PgWireError>));
        let out: Vec<_> = Limited::new(rows, l, &r, None, None).collect().await;
        assert_eq!(out.len(), 4);
        assert!(out[..3].iter().all(|r| r.is_ok()));
        match &out[3] {
            Err(pgwire::error::PgWireError::UserError(info)) => assert_eq!(info.code, "54000"),
            other => panic!("expected 54000, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_passed_deadline_ends_the_stream_with_57014() {
        let l = Arc::new(Limits::from_config(&LimitsConfig::default()));
        let r = l.for_role(None);
        let pending = futures::stream::pending::<Result<i32, pgwire::error::PgWireError>>();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        let out: Vec<_> = Limited::new(pending, l, &r, Some(deadline), None)
            .collect()
            .await;
        assert_eq!(out.len(), 1);
        match &out[0] {
            Err(pgwire::error::PgWireError::UserError(info)) => assert_eq!(info.code, "57014"),
            other => panic!("expected 57014, got {other:?}"),
        }
    }

    #[test]
    fn each_limit_has_its_metric_label() {
        for e in [
            Exceeded::StatementTimeout,
            Exceeded::MaxRows,
            Exceeded::MaxConcurrentStatements,
        ] {
            assert_eq!(crate::metrics::Limit::from(e).as_str(), e.as_str());
        }
    }
}
