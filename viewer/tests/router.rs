//! The HTTP routes without a port or a vehicle (`tower::ServiceExt::oneshot`): what every
//! client gets when nothing is connected, and how bad requests are answered.
#![allow(clippy::unwrap_used, reason = "a test helper failing is a test failing")]

use ads_viewer::app_state::AppState;
use ads_viewer::config::ViewerConfig;
use ads_viewer::hub::Hub;
use ads_viewer::web::{router, MAX_CLIENT_MESSAGE};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

fn app() -> axum::Router {
    let (hub, _actions) = Hub::new(ViewerConfig::default(), None);
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    router(AppState::new(hub, shutdown))
}

async fn call(request: Request<Body>) -> (StatusCode, String, String) {
    let response = app().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path).header(header::CONTENT_TYPE, "application/json").body(body.into()).unwrap()
}

#[tokio::test]
async fn the_page_and_its_assets_are_embedded() {
    let (status, kind, page) = call(get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/html"));
    for needle in ["<canvas id=\"video\"", "btn-estop", "layer-lanes", "/app.js", "plot-latency"] {
        assert!(page.contains(needle), "page lacks {needle}");
    }
    let (status, kind, js) = call(get("/app.js")).await;
    assert_eq!((status, kind.as_str()), (StatusCode::OK, "text/javascript; charset=utf-8"));
    assert!(js.contains("new WebSocket"));
    let (status, kind, _) = call(get("/app.css")).await;
    assert_eq!((status, kind.as_str()), (StatusCode::OK, "text/css; charset=utf-8"));
    assert_eq!(call(get("/nope")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_and_metrics_say_no_vehicle_is_connected() {
    let (status, _, health) = call(get("/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["vehicle_link"], "connecting");
    let (status, kind, metrics) = call(get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/plain; version=0.0.4"));
    assert!(metrics.contains("ads_viewer_vehicle_link_up 0\n"), "{metrics}");
    assert!(metrics
        .contains("# TYPE ads_viewer_frames_received_total counter\nads_viewer_frames_received_total 0\n"));
}

#[tokio::test]
async fn without_frames_snapshot_is_unavailable_and_bad_layers_are_named() {
    let (status, _, body) = call(get("/snapshot.jpg")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no frame"), "{body}");
    let (status, _, body) = call(get("/stream.mjpg?layers=lanes,wings")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("wings"), "{body}");
    let (status, _, _) = call(get("/snapshot.jpg?colour=red")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn actions_are_validated_and_refused_while_disconnected() {
    let (status, _, body) = call(post("/api/action", "{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not an action"), "{body}");
    let (status, _, body) = call(post("/api/action", r#"{"command":{"type":"fly"}}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("fly"), "{body}");
    let (status, _, body) =
        call(post("/api/action", r#"{"command":{"type":"set_target_speed","mps":-3}}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("outside 0..=40"), "{body}");
    let (status, _, body) = call(post("/api/action", r#"{"command":{"type":"pause"}}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("not connected"), "{body}");
    let huge =
        format!(r#"{{"command":{{"type":"pause"}},"request_id":"{}"}}"#, "x".repeat(MAX_CLIENT_MESSAGE));
    assert_eq!(call(post("/api/action", huge)).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_websocket_upgrade_from_another_origin_is_forbidden() {
    let request = Request::get("/ws")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::ORIGIN, "http://evil.example")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = call(request).await;
    // Without a real connection axum cannot upgrade, but the Origin check answers first.
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

const TOKEN: &str = "0123456789abcdef0123";

fn app_with_token() -> axum::Router {
    let (hub, _actions) = Hub::new(ViewerConfig::default(), None);
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let token = ads_viewer::access::AccessToken::new(TOKEN).unwrap();
    router(AppState::new(hub, shutdown).with_access(Some(token)))
}

async fn status_with_token(request: Request<Body>) -> StatusCode {
    app_with_token().oneshot(request).await.unwrap().status()
}

#[tokio::test]
async fn with_an_access_token_only_the_page_and_health_are_open() {
    for open in ["/", "/app.js", "/app.css", "/healthz"] {
        assert_eq!(status_with_token(get(open)).await, StatusCode::OK, "{open}");
    }
    for closed in ["/api/session", "/metrics", "/snapshot.jpg", "/stream.mjpg", "/ws"] {
        assert_eq!(status_with_token(get(closed)).await, StatusCode::UNAUTHORIZED, "{closed}");
        let wrong = format!("{closed}?token=0123456789abcdef0124");
        assert_eq!(status_with_token(get(&wrong)).await, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    assert_eq!(
        status_with_token(post("/api/action", r#"{"command":{"type":"pause"}}"#)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with_token(get(&format!("/api/session?token={TOKEN}"))).await, StatusCode::OK);
    let bearer = Request::get("/metrics")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(status_with_token(bearer).await, StatusCode::OK);
    // Past the token, the action is judged on its own merits (no vehicle here).
    let action = Request::post(format!("/api/action?token={TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"command":{"type":"pause"}}"#))
        .unwrap();
    assert_eq!(status_with_token(action).await, StatusCode::SERVICE_UNAVAILABLE);
}

const ROUTES: [&str; 10] = [
    "/",
    "/app.js",
    "/app.css",
    "/ws",
    "/healthz",
    "/metrics",
    "/snapshot.jpg",
    "/stream.mjpg",
    "/api/session",
    "/nope",
];

fn with_headers(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

/// DNS rebinding: a page whose name now resolves to 127.0.0.1 still sends its own name.
#[tokio::test]
async fn foreign_host_headers_are_refused_on_every_route() {
    for path in ROUTES.iter().copied().chain(["/api/action"]) {
        for method in ["GET", "POST"] {
            for host in ["evil.example", "evil.example:8080", "localhost.evil.example"] {
                let headers = [("host", host), ("content-type", "application/json")];
                let (status, _, body) = call(with_headers(method, path, &headers, "{}")).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} Host {host}: {body}");
                assert!(body.contains("not allowed"), "{body}");
            }
        }
        for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "10.1.2.3:8080"] {
            let (status, _, body) = call(with_headers("GET", path, &[("host", host)], "")).await;
            assert_ne!(status, StatusCode::FORBIDDEN, "GET {path} Host {host}: {body}");
        }
    }
}

#[tokio::test]
async fn cross_site_requests_non_json_posts_and_framing_are_refused() {
    let pause = r#"{"command":{"type":"pause"}}"#;
    let host = ("host", "127.0.0.1:8080");
    // The text/plain form and no-cors fetch of a hostile page.
    for kind in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let request = with_headers("POST", "/api/action", &[host, ("content-type", kind)], pause);
        assert_eq!(call(request).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{kind}");
    }
    let json = ("content-type", "application/json");
    for origin in ["http://127.0.0.1:9999", "http://evil.example", "http://localhost", "null"] {
        let request = with_headers("POST", "/api/action", &[host, json, ("origin", origin)], pause);
        let (status, _, body) = call(request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}: {body}");
    }
    for site in ["cross-site", "same-site"] {
        for path in ["/api/action", "/snapshot.jpg", "/api/session"] {
            let method = if path == "/api/action" { "POST" } else { "GET" };
            let request = with_headers(method, path, &[host, json, ("sec-fetch-site", site)], pause);
            assert_eq!(call(request).await.0, StatusCode::FORBIDDEN, "{site} {path}");
        }
        // The page itself may be opened from a link on another site.
        let page = with_headers("GET", "/", &[host, ("sec-fetch-site", site)], "");
        assert_eq!(call(page).await.0, StatusCode::OK, "{site} navigation");
    }
    // Our own page's request passes the guard (and fails only for want of a vehicle).
    let own = [host, json, ("origin", "http://127.0.0.1:8080"), ("sec-fetch-site", "same-origin")];
    assert_eq!(
        call(with_headers("POST", "/api/action", &own, pause)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Every answer, refusals included, forbids framing.
    for path in ROUTES {
        let response = app().oneshot(with_headers("GET", path, &[host], "")).await.unwrap();
        let h = response.headers();
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY", "{path}");
        assert_eq!(h.get("content-security-policy").unwrap(), "frame-ancestors 'none'", "{path}");
    }
    let refused = app().oneshot(with_headers("GET", "/", &[("host", "evil.example")], "")).await.unwrap();
    assert_eq!(refused.headers().get("x-frame-options").unwrap(), "DENY");
}

/// The rebinding attack that used to work: Origin and Host both the attacker's name.
#[tokio::test]
async fn a_websocket_whose_origin_matches_a_foreign_host_is_refused() {
    let request = Request::get("/ws")
        .header(header::HOST, "evil.example:8080")
        .header(header::ORIGIN, "http://evil.example:8080")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(request).await.0, StatusCode::FORBIDDEN);
}
