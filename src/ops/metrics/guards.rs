//! Handles that record when they are dropped: a connection or a
//! break-glass session counted as active, a statement's phase timer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::Phase;

/// Counts a connection as active while it lives.
#[derive(Debug)]
pub struct ConnectionGuard {
    pub(super) active: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.active.dec();
    }
}

/// Counts a session as in break-glass mode while it lives.
#[derive(Debug)]
pub struct BreakGlassGuard {
    pub(super) active: Gauge,
}

impl Drop for BreakGlassGuard {
    fn drop(&mut self) {
        self.active.dec();
    }
}

/// Times the phases of one statement. [`StatementTimer::mark`] records the
/// time since the previous mark (or the start) as a phase;
/// [`StatementTimer::first_row`] records the time to the first row once;
/// dropping the timer (or [`StatementTimer::finish`]) records the total.
/// It can travel with a statement's row stream, so the total includes
/// streaming.
#[derive(Debug)]
pub struct StatementTimer {
    pub(super) phases: Arc<[Histogram; Phase::COUNT]>,
    pub(super) started: Instant,
    pub(super) mark: Instant,
    pub(super) first_row_seen: bool,
}

impl StatementTimer {
    fn observe(&self, phase: Phase, elapsed: Duration) {
        self.phases[phase.index()].observe(elapsed.as_secs_f64());
    }

    /// Record the time since the previous mark (or the start) as `phase`
    /// (`ParseRewrite`, `Plan`, `Execute`), and start the next phase.
    pub fn mark(&mut self, phase: Phase) {
        let now = Instant::now();
        self.observe(phase, now.saturating_duration_since(self.mark));
        self.mark = now;
    }

    /// The first row is ready: record the time since the start, once.
    pub fn first_row(&mut self) {
        if !self.first_row_seen {
            self.first_row_seen = true;
            self.observe(Phase::FirstRow, self.started.elapsed());
        }
    }

    /// Time since the statement started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The statement ended: record its total time.
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for StatementTimer {
    fn drop(&mut self) {
        self.observe(Phase::Total, self.started.elapsed());
    }
}
