//! The calibration page (`/calibrate`), as Donkey Car's `donkey calibrate`: the car on a
//! stand, wheels off the ground, one channel at a time moved with a slider and **held only
//! while the slider is held**, and the values found saved into the vehicle's configuration.
//!
//! The page is static (`assets/calibrate.html`, `assets/calibrate.js`) and talks over the same
//! websocket as the main page, so its actions pass the same checks and are signed by the hub
//! like every other: `calibrate_pulse` re-sent every 100 ms while held (each a lease of 300 ms
//! on the vehicle, never retransmitted: see `actions.rs`), `calibrate_release` when let go,
//! `calibrate_save`. A closed tab or a dropped link stops the renewals and the vehicle returns
//! the channel to neutral when the lease runs out (docs/actuators.md, docs/protocol.md).

use axum::http::header;
use axum::routing::get;
use axum::Router;

const CALIBRATE_HTML: &str = include_str!("../assets/calibrate.html");
const CALIBRATE_JS: &str = include_str!("../assets/calibrate.js");

/// `/calibrate` and its script.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/calibrate",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], CALIBRATE_HTML) }),
        )
        .route(
            "/calibrate.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], CALIBRATE_JS) }),
        )
}
