//! The `ads-ring` tool and the `ads-bench` benchmarks: what their binaries run.

pub mod latency;
pub mod link_bench;
pub mod pattern;
pub mod peers;
pub mod pipeline_bench;
pub mod ring_bench;
pub mod ring_tool;
pub mod shutdown;
