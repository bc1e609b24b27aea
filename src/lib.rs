//! lakeward: a PostgreSQL-wire, policy-enforcing SQL proxy for healthcare
//! lakehouses.
//!
//! Code map (one folder per stage of a query; see ARCHITECTURE.md):
//!
//! - [`server`]: accept, TLS negotiation, the pgwire handlers of one
//!   connection, cancel, shutdown.
//! - [`session`]: one connected client and its settings (`SET`/`SHOW`).
//! - [`rewrite`]: the statement gate (parse, classify, refuse) and the AST
//!   rules applied before planning. Speaks only the sqlparser AST.
//! - [`engine`]: DataFusion over Delta tables; plans ASTs, verifies plans are
//!   read-only, streams record batches, encodes them for the wire, and maps
//!   engine errors to sanitised SQLSTATEs.
//! - [`auth`]: JWT verification; a token becomes a [`auth::Principal`].
//! - [`policy`]: the policy model (roles, purposes, break-glass) loaded from
//!   `policy-rules/`.
//! - [`enforce`]: the enforcement step (access context, grants, planning
//!   over secured tables, the plan verifier) and the plan cache.
//! - [`audit`]: the access audit: durable segment log, hash chain, signed
//!   checkpoints, the Delta table `audit.access_log`, `audit verify`.
//! - [`datagen`]: the deterministic synthetic healthcare dataset.
//! - [`ops`]: operations: the Prometheus [`metrics`] and the admin HTTP
//!   endpoint (`admin`, feature `admin`), re-exported here as
//!   `crate::metrics` and `crate::admin`.
//! - [`config`], [`error`], [`cli`]: configuration, the client-facing error
//!   type, the command line.

#![warn(unreachable_pub)]

pub mod audit;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod datagen;
pub mod enforce;
pub mod engine;
pub mod error;
pub mod ops;
pub mod policy;
pub mod query;
pub mod rewrite;
pub mod server;
pub(crate) mod session;

#[cfg(feature = "admin")]
pub use ops::admin;
pub use ops::metrics;
