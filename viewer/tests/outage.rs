//! Outages of the link, made by stopping a process (SIGSTOP) and letting it go on (SIGCONT):
//! the backlog of states that queued meanwhile is never shown, an e-stop pressed during an
//! outage is answered `202 pending` and its outcome can be asked for, and the page hears
//! that the link is back.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

mod support;

use ads_testkit::DEADLINE;
use futures_util::StreamExt;
use rustix::process::Signal;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::{metric, Vehicle, Viewer};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Every text message of a page's websocket, with when it arrived.
async fn page_messages(viewer: &Viewer) -> mpsc::UnboundedReceiver<(Instant, Value)> {
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", viewer.port)).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if tx.send((Instant::now(), value)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn next_where(
    page: &mut mpsc::UnboundedReceiver<(Instant, Value)>,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> (Instant, Value) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, message) = tokio::time::timeout(left, page.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
            .unwrap_or_else(|| panic!("the page's socket closed before {what}"));
        if accept(&message) {
            return (at, message);
        }
    }
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_no_stale_state_is_shown_and_an_estop_is_pending_until_confirmed() {
    let mut vehicle = Vehicle::start("outage", false);
    let viewer = Viewer::start(&vehicle);
    let mut page = page_messages(&viewer).await;
    next_where(&mut page, "a state", |m| m["type"] == "state").await;

    // The viewer stops reading for 4 s while the vehicle goes on: states queue for it in the
    // kernel's buffers (and the vehicle's socket). None of them may reach the page.
    viewer.process.signal(Signal::STOP);
    tokio::time::sleep(Duration::from_secs(4)).await;
    viewer.process.signal(Signal::CONT);
    let resumed = Instant::now();
    let now = tokio::task::block_in_place(|| vehicle.fresh_state());
    let fps = f64::from(now.fps).max(5.0);
    let oldest_fresh = now.frame_id.saturating_sub(fps as u64);
    let mut shown = Vec::new();
    while resumed.elapsed() < Duration::from_secs(3) {
        let Ok(Some((_, message))) = tokio::time::timeout(Duration::from_millis(200), page.recv()).await
        else {
            continue;
        };
        if message["type"] == "state" {
            shown.push(message["state"]["frame_id"].as_u64().unwrap());
        }
    }
    assert!(!shown.is_empty(), "no state shown after the outage");
    let stale: Vec<_> = shown.iter().filter(|&&id| id < oldest_fresh).collect();
    assert!(
        stale.is_empty(),
        "states more than 1 s old shown after the outage (the vehicle was at frame {} at {fps} fps): {stale:?}",
        now.frame_id
    );
    assert!(shown.windows(2).all(|w| w[0] <= w[1]), "a state older than one shown: {shown:?}");
    let (_, metrics) = viewer.get("/metrics").unwrap();
    let discarded = metric(&String::from_utf8_lossy(&metrics), "ads_viewer_states_discarded_total");
    assert!(discarded.unwrap() >= 1.0, "no backlog discarded: {discarded:?}");

    // Now the vehicle goes silent: an e-stop pressed meanwhile is retransmitted, and the HTTP
    // caller hears so (202) rather than a timeout.
    vehicle.car.process.signal(Signal::STOP);
    next_where(&mut page, "the link lost", |m| m["type"] == "link" && m["status"] == "lost").await;
    let (status, body) = tokio::task::block_in_place(|| {
        viewer.post("/api/action", r#"{"command":{"type":"emergency_stop"}}"#)
    });
    let pending = json(&body);
    assert_eq!((status, pending["status"].as_str()), (202, Some("pending")), "{pending}");
    let id = pending["id"].as_str().unwrap().to_string();
    let (status, body) = viewer.get(&format!("/api/action/{id}")).unwrap();
    assert_eq!((status, json(&body)["status"].as_str()), (202, Some("pending")));
    assert_eq!(viewer.get("/api/action/nobody-1").unwrap().0, 404);

    vehicle.car.process.signal(Signal::CONT);
    let vehicle_back = Instant::now();
    let (back_at, back) =
        next_where(&mut page, "the link back", |m| m["type"] == "link" && m["status"] == "live").await;
    assert_eq!(back["back"], true, "{back}");
    let (state_at, _) = next_where(&mut page, "a state after the outage", |m| m["type"] == "state").await;
    // Figures, not limits (the machine's load decides them): link back and fresh state.
    eprintln!(
        "after SIGCONT: link back on the page in {} ms, a state in {} ms",
        back_at.saturating_duration_since(vehicle_back).as_millis(),
        state_at.saturating_duration_since(vehicle_back).as_millis()
    );
    let deadline = Instant::now() + DEADLINE;
    let outcome = loop {
        let (status, body) = viewer.get(&format!("/api/action/{id}")).unwrap();
        if status != 202 {
            break (status, json(&body));
        }
        assert!(Instant::now() < deadline, "the e-stop never confirmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((outcome.0, outcome.1["status"].as_str()), (200, Some("accepted")), "{}", outcome.1);
    assert_eq!(outcome.1["command"], "emergency_stop");
    tokio::task::block_in_place(|| vehicle.state_where("the e-stop latched", |s| s.commands.estop_latched));
}
