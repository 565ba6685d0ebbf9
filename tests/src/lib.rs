//! Harness code shared by the multi-process tests, the `ads-ring` demo and the benchmarks.

pub mod latency;
pub mod link_bench;
pub mod pattern;
pub mod peers;
pub mod pipeline_bench;
pub mod ring_bench;
pub mod ring_tool;
pub mod shutdown;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), so stdout stays machine-readable.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
