//! `ads-bench pipeline`, briefly: the harness behind scripts/bench.sh starts the whole pipeline
//! with a headless Chromium, measures every hop and writes its JSON and SVG. This checks that
//! every hop got samples and the outputs are well-formed; the figures themselves are for
//! people (docs/benchmarks.md), never asserted.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use std::process::Command;

#[test]
fn a_short_benchmark_run_measures_every_hop_and_writes_its_reports() {
    let out = std::env::temp_dir().join(format!("ads-bench-smoke-{}", std::process::id()));
    let status = Command::new(ads_testkit::bin("ads-bench"))
        .args(["pipeline", "--seconds", "6", "--warmup", "4", "--out"])
        .arg(&out)
        .env("RUST_LOG", "error")
        .status()
        .unwrap();
    assert!(status.success(), "ads-bench failed: {status}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("pipeline.json")).unwrap()).unwrap();
    let hops = report["hops"].as_array().unwrap();
    let names: Vec<&str> = hops.iter().map(|h| h["name"].as_str().unwrap()).collect();
    for hop in [
        "capture → detection reads (shm)",
        "detection result → control loop (shm)",
        "vehicle capture → viewer receives (TCP)",
        "viewer → painted in Chromium",
        "capture → browser (end to end)",
    ] {
        let h =
            hops.iter().find(|h| h["name"] == hop).unwrap_or_else(|| panic!("{hop} missing from {names:?}"));
        assert!(h["summary"]["count"].as_u64().unwrap() > 10, "too few samples for {hop}: {h}");
        assert!(h["summary"]["p50_us"].as_f64().unwrap() > 0.0, "{h}");
    }
    assert!(
        report["shm_vs_zmq_tcp"]["zmq_tcp"]["count"].as_u64().unwrap() > 10,
        "{}",
        report["shm_vs_zmq_tcp"]
    );
    // The vehicle's own stages (state.timings): the simulator's sensor noise is never free.
    let stages = report["vehicle_stages_us"].as_array().unwrap();
    let stage = |name: &str| stages.iter().find(|s| s["stage"].as_str().unwrap().contains(name)).unwrap();
    assert!(stage("sensor noise")["p50"].as_f64().unwrap() > 0.0, "{stages:?}");
    assert!(stage("encode")["p50"].as_f64().unwrap() > 0.0, "{stages:?}");
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 4, "vehicle, detection, viewer, chromium: {processes:?}");
    assert!(processes.iter().all(|p| p["cpu_percent_of_one_core"].as_f64().unwrap() > 0.0), "{processes:?}");
    let svg = std::fs::read_to_string(out.join("pipeline.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), hops.len());
    std::fs::remove_dir_all(&out).unwrap();
}
