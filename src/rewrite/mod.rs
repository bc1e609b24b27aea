//! Statement rewriting: the gate that classifies and refuses statements, and
//! the rules that transform an allowed statement's AST before planning.
//!
//! This module speaks only the sqlparser AST (through
//! `datafusion::sql::sqlparser`), never DataFusion's engine types.

pub(crate) mod compat;
pub(crate) mod fingerprint;
pub mod gate;
pub(crate) mod lift;
pub(crate) mod search_path;
pub(crate) mod session_functions;
