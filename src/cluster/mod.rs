//! Distributed execution (SPEC §11): one statement's stages on
//! `lakeward worker` processes, with datafusion-distributed.
//!
//! - `coordinator.rs`: on `serve`, which statements are distributed and
//!   how a policy barrier's files are dealt out to tasks; the TLS,
//!   token-carrying connections to workers.
//! - `worker.rs`: `lakeward worker`, its authentication and the check that
//!   every stage reads tables only through policy barriers.
//! - `codec.rs`: lakeward's plan nodes and membership functions on the
//!   wire.
//! - `accounting.rs`: the patient accounting of taps that ran on workers,
//!   collected by the coordinator when the statement ends.

pub(crate) mod accounting;
pub(crate) mod codec;
pub mod coordinator;
pub mod worker;

pub use coordinator::Coordinator;
