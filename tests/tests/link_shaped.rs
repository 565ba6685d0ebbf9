//! The video link on a link slower than the stream: `ads-bench link` (vehicle + measuring
//! viewers) in a private network namespace whose loopback is shaped with htb, its JSON checked
//! for behaviour, never for a speed. Needs root and `ip netns`; skipped with a printed reason
//! elsewhere.

#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_testkit::bin;
use std::process::Command;

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    for tool in ["ip", "tc"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("no `{tool}`"));
        }
    }
    None
}

/// A network namespace for one test, deleted afterwards.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Option<Self> {
        let name = format!("ads-t{}-{tag}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output().ok()?;
        if !out.status.success() {
            eprintln!("skipped: ip netns add failed: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        Some(Self(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn bench(ns: &Netns, cases: &str) -> serde_json::Value {
    run_bench(ns, &["--seconds", "4", "--warmup", "2", "--stingy", "--cases", cases])
}

/// `ads-bench link` in `ns` with `args`; its JSON report.
fn run_bench(ns: &Netns, args: &[&str]) -> serde_json::Value {
    let json = std::env::temp_dir().join(format!("{}.json", ns.0));
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(bin("ads-bench"))
        .args(["link", "--in-private-netns"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    println!("{stdout}");
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(json);
    report
}

#[test]
fn on_a_link_slower_than_the_stream_nothing_queues_and_each_viewer_gets_its_own_tier() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let Some(ns) = Netns::new("link") else { return };
    // 20 Mbit/s alone, 2 Mbit/s (a tenth of the full stream) alone, then both at once.
    let report = bench(&ns, "20,2,two");
    let [alone, slow, two] = report["cases"].as_array().unwrap().as_slice() else { panic!("{report:#}") };
    for case in [alone, slow, two] {
        for v in case["viewers"].as_array().unwrap() {
            // Frames kept coming, ids only forward: nothing older arrived after a newer frame.
            assert!(v["frames"].as_u64() > Some(0), "{case:#}");
            assert_eq!(v["out_of_order"], 0, "a backlog arrived: {case:#}");
            // At most one frame in flight per session, by the vehicle's own account.
            assert!(v["max_in_flight"].as_u64() <= Some(1), "{case:#}");
            // The state kept arriving while the video filled the link, and e-stops were
            // acknowledged over it (the first viewer sends them).
            assert!(v["states"].as_u64() > Some(20), "{case:#}");
        }
        let first = &case["viewers"][0];
        assert!(first["actions_sent"].as_u64() > Some(0), "{case:#}");
        assert_eq!(
            first["actions_acked"], first["actions_sent"],
            "an e-stop or resume not acknowledged: {case:#}"
        );
        // A client that says hello and never returns a credit got its one frame, no more.
        assert!(case["stingy_frames"].as_u64() <= Some(1), "{case:#}");
    }
    assert!(slow["viewers"][0]["last_tier"].as_u64() > Some(0), "2 Mbit/s on the best tier: {slow:#}");
    // Together, the slow viewer ends lower than the fast one, and the fast one stays within
    // the tiers it used alone: the slow link did not pull it down.
    let (fast, slow) = (&two["viewers"][0], &two["viewers"][1]);
    assert!(slow["last_tier"].as_u64() > fast["last_tier"].as_u64(), "{two:#}");
    let worst_alone: u64 = alone["viewers"][0]["tiers"]
        .as_str()
        .unwrap()
        .split(',')
        .filter_map(|t| t.parse().ok())
        .max()
        .unwrap();
    assert!(
        fast["last_tier"].as_u64() <= Some(worst_alone),
        "the fast viewer lost its tier: {two:#}\nalone: {alone:#}"
    );
}

/// A car on WiFi (`ads-bench link --car-netns`: the vehicle in a namespace of its own, a veth
/// pair, one tbf per direction) whose link goes down for 10 s, watched by a client that
/// behaves as docs/protocol.md 1 asks (heartbeats, quick reconnects, hellos while starved,
/// e-stops resent): afterwards no backlog of states queued during the outage arrives, fresh
/// state and frames come back, and the e-stops sent into the outage are acknowledged. (The
/// bench's client before this change, without heartbeats: 156 stale states, e-stops acked
/// 3.3 s after the return.)
#[test]
fn after_an_outage_no_backlog_of_states_arrives() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let Some(laptop) = Netns::new("lap") else { return };
    let Some(car) = Netns::new("car") else { return };
    let report = run_bench(
        &laptop,
        &["--car-netns", &car.0, "--warmup", "2", "--cases", "outage", "--codecs", "h264"],
    );
    let viewer = &report["cases"][0]["viewers"][0];
    let outage = &viewer["outage"];
    assert!(outage.is_object(), "{report:#}");
    assert_eq!(outage["stale_states"], 0, "states over 1 s old arrived after the link came back: {viewer:#}");
    assert!(outage["fresh_state_ms"].is_number(), "no fresh state after the outage: {viewer:#}");
    assert!(outage["fresh_frame_ms"].is_number(), "no fresh frame after the outage: {viewer:#}");
    assert!(
        !outage["estop_in_outage_acked_ms"].as_array().unwrap().is_empty(),
        "an e-stop sent into the outage was never acknowledged: {viewer:#}"
    );
}
