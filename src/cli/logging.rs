//! Logging to stderr.

use super::{LogArgs, LogFormat};

/// Logging to stderr. lakeward's own events follow the filter; every other
/// crate (the engine, storage, protocol and Delta kernel crates log query
/// plans, literals, file statistics and wire messages at debug and trace
/// level) is capped at warn whatever the filter asks for, so that no
/// statement literal or data value can reach the log. lakeward's events
/// carry ids, kinds and fingerprints only.
pub(super) fn init_logging(args: &LogArgs) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::prelude::*;
    // One per-layer filter: the requested filter and the cap together.
    // With the requested filter global and the cap per layer, lakeward's
    // own debug events went missing (at `--log debug` four of six tables
    // never logged which scan they got, while `--log lakeward=trace`
    // showed all six).
    let filter = EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .and(filter_fn(|m| {
            m.target().starts_with("lakeward") || *m.level() <= tracing::Level::WARN
        }));
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry();
    let _ = match args.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
}
