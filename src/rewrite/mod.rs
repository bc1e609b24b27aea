//! Statement rewriting: the gate that classifies and refuses statements, and
//! the rules that transform an allowed statement's AST before planning.
//!
//! This module speaks only the sqlparser AST (through
//! `datafusion::sql::sqlparser`), never DataFusion's engine types.

pub mod compat;
pub mod fingerprint;
pub mod gate;
pub mod search_path;
pub mod session_functions;
