//! Operations: what an operator sees of a running lakeward, apart from the
//! PostgreSQL port.
//!
//! - [`metrics`]: the Prometheus metrics of the process (`metrics/`).
//! - `admin` (feature `admin`): the admin HTTP endpoint that serves them,
//!   with liveness and readiness (`admin.rs`).
//!
//! Both are re-exported at the crate root as `crate::metrics` and
//! `crate::admin`.

#[cfg(feature = "admin")]
pub mod admin;
pub mod metrics;
