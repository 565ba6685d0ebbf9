//! Harness code shared by the multi-process tests, the `ads-ring` demo and the benchmarks.

pub mod latency;
pub mod link_bench;
pub mod pattern;
pub mod peers;
pub mod pipeline_bench;
pub mod ring_bench;
pub mod ring_tool;
pub mod shutdown;
