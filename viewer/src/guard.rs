//! What every HTTP request passes before a route sees it: the web-security rules that keep a
//! web page in the operator's browser from using the viewer (see docs/security.md, "Web UI").
//!
//! * **Host allowlist** (DNS rebinding): `Host` must be an IP address, `localhost` (or a
//!   `*.localhost` name), or a name configured in `allowed_hosts`. A page that rebinds its own
//!   name to 127.0.0.1 still sends that name, and is refused on every route.
//! * **Origin allowlist** on every request that acts (POST, websocket upgrade): the Origin must
//!   be this viewer's own origin (a loopback name or address, or the address the connection
//!   arrived on, or a configured host name, *with this viewer's port*) or one configured in
//!   `allowed_origins`. Origin is never compared with Host, which the attacker chooses.
//! * **Sec-Fetch-Site**: a browser's `cross-site` or `same-site` request is refused everywhere
//!   but on the page itself (a link to the viewer from elsewhere still opens it).
//! * **`Content-Type: application/json`** on POST: a cross-origin `<form>` or `no-cors` fetch
//!   can only send `text/plain`, form or multipart bodies, so it never reaches a handler.
//! * **No framing**: `X-Frame-Options: DENY` and CSP `frame-ancestors 'none'` on every
//!   response (clickjacking), plus `nosniff` and `no-referrer`.
//! * **A time limit** on every request's answer (the serve loop limits reading its headers).

use crate::hub::Hub;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The local address a request's connection arrived on (set by [`crate::serve`]).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

#[derive(Debug)]
pub struct Guard {
    /// Lower-case host names allowed besides loopback names and IP addresses; `*`: any.
    allowed_hosts: Vec<String>,
    /// Origins allowed besides our own, `scheme://host[:port]`, lower case; `*`: any.
    allowed_origins: Vec<String>,
    /// Our port, for origins when the connection's address is not known (tests without a port).
    port: u16,
    timeout: Duration,
    hub: Arc<Hub>,
}

impl Guard {
    pub fn new(hub: Arc<Hub>) -> Arc<Self> {
        let c = &hub.config;
        let lower =
            |v: &[String]| v.iter().map(|s| s.trim().trim_end_matches('/').to_ascii_lowercase()).collect();
        Arc::new(Self {
            allowed_hosts: lower(&c.allowed_hosts),
            allowed_origins: lower(&c.allowed_origins),
            port: c.port,
            timeout: Duration::from_millis(c.request_timeout_ms),
            hub: Arc::clone(&hub),
        })
    }

    fn name_allowed(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        is_loopback_name(&name) || self.allowed_hosts.iter().any(|h| h == "*" || *h == name)
    }

    /// `Host` (or the URI's authority): IP addresses are fine (rebinding needs a name).
    pub(crate) fn host_allowed(&self, authority: Option<&str>) -> bool {
        let Some(authority) = authority else { return true };
        let name = host_of(authority);
        name.parse::<IpAddr>().is_ok() || self.name_allowed(name)
    }

    fn origin_allowed(&self, origin: &str, local: Option<SocketAddr>) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.allowed_origins.iter().any(|o| o == "*" || *o == origin) {
            return true;
        }
        let Some((scheme, authority)) = origin.split_once("://") else { return false };
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let name = host_of(authority);
        let port = authority
            .strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .map_or(authority.rsplit_once(':').map(|(_, p)| p), |(_, after)| after.strip_prefix(':'))
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let port = match port {
            Some(p) => p.parse::<u16>().ok(),
            None => Some(default_port),
        };
        let ours = local.map_or(self.port, |a| a.port());
        if port != Some(ours) {
            return false;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || local.is_some_and(|a| a.ip() == ip),
            Err(_) => self.name_allowed(name),
        }
    }
}

/// `localhost` and `*.localhost` always resolve to loopback in browsers (RFC 6761).
fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// The host part of `host[:port]` or `[v6]:port`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// A browser's own statement of where a request comes from; absent from other clients.
fn fetch_site_ok(headers: &HeaderMap) -> bool {
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        None => true,
        Some(site) => matches!(site, "same-origin" | "none"),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn refuse(guard: &Guard, status: StatusCode, detail: String) -> Response {
    guard.hub.metrics.requests_refused.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("refused: {detail}");
    (status, Json(json!({"error": detail}))).into_response()
}

pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let mut response = judge(&guard, request, next).await;
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

async fn judge(guard: &Guard, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !guard.host_allowed(authority) {
        let host = authority.unwrap_or_default().chars().take(100).collect::<String>();
        let detail =
            format!("Host {host:?} is not allowed; start the viewer with --allowed-host NAME to use it");
        return refuse(guard, StatusCode::FORBIDDEN, detail);
    }
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let acts = upgrade || !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let local = request.extensions().get::<LocalAddr>().map(|l| l.0);
    if acts {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("null");
            if !guard.origin_allowed(origin, local) {
                let shown = origin.chars().take(100).collect::<String>();
                let detail =
                    format!("origin {shown:?} may not act on this viewer (add it with --allowed-origin)");
                return refuse(guard, StatusCode::FORBIDDEN, detail);
            }
        }
    }
    // The page itself may be opened from a link anywhere; nothing else may be fetched by
    // another site (no embedding the snapshot, no cross-site requests of any kind).
    if (acts || request.uri().path() != "/") && !fetch_site_ok(headers) {
        return refuse(guard, StatusCode::FORBIDDEN, "cross-site request refused".into());
    }
    if request.method() == Method::POST && !is_json(headers) {
        let detail = "POST bodies must be Content-Type: application/json".to_string();
        return refuse(guard, StatusCode::UNSUPPORTED_MEDIA_TYPE, detail);
    }
    match tokio::time::timeout(guard.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => refuse(guard, StatusCode::REQUEST_TIMEOUT, "the request took too long".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ViewerConfig;

    fn guard(hosts: &[&str], origins: &[&str]) -> Arc<Guard> {
        let config = ViewerConfig {
            port: 8080,
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            ..ViewerConfig::default()
        };
        Guard::new(Hub::new(config, None).0)
    }

    #[test]
    fn hosts_loopback_names_addresses_and_configured_names_only() {
        let g = guard(&["Laptop.lan"], &[]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "a.localhost",
            "[::1]:8080",
            "192.168.1.5",
            "laptop.lan:8080",
        ] {
            assert!(g.host_allowed(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "laptop.lan.evil",
        ] {
            assert!(!g.host_allowed(Some(bad)), "{bad}");
        }
    }

    #[test]
    fn origins_must_be_ours_including_the_port() {
        let g = guard(&["laptop.lan"], &["https://proxy.example"]);
        let local: SocketAddr = "192.168.1.5:8080".parse().unwrap();
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
            "http://192.168.1.5:8080",
            "http://laptop.lan:8080",
            "https://proxy.example/",
        ] {
            assert!(g.origin_allowed(ok, Some(local)), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:9999",
            "http://localhost",
            "http://evil.example:8080",
            "http://6.6.6.6:8080",
            "null",
            "file://",
            "http://127.0.0.1:8080.evil.example",
        ] {
            assert!(!g.origin_allowed(bad, Some(local)), "{bad}");
        }
    }
}
