//! The `lakeward` binary: parse the command line and hand over to the library.

/// mimalloc instead of the C library's allocator: glibc keeps the pages of
/// freed allocations resident in per-thread arenas, so the transient peak of
/// one large statement (a 4 MiB SQL text tokenises into hundreds of MiB)
/// stayed in the process's RSS for good; mimalloc returns them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lakeward::cli::main()
}
