//! Who may use the web UI. On loopback (the default) anyone on this machine may; bound to
//! any other address, every request but the page itself needs the access token (printed at
//! start-up or set in the config), so a person on the same WiFi cannot watch or stop the car.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

/// Paths served without a token: the page must load to ask for one, and health checks come
/// from supervisors that should not need a secret.
const OPEN_PATHS: [&str; 4] = ["/", "/app.js", "/app.css", "/healthz"];

#[derive(Clone)]
pub struct AccessToken(Arc<str>);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the access token must be 16..=128 characters of [A-Za-z0-9_-], got {0} characters")]
    Invalid(usize),
    #[error("reading random bytes for the access token: {0}")]
    Random(std::io::Error),
}

impl AccessToken {
    pub fn new(token: &str) -> Result<Self, TokenError> {
        let ok = (16..=128).contains(&token.len())
            && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(TokenError::Invalid(token.len()));
        }
        Ok(Self(token.into()))
    }

    /// 128 random bits from the kernel, hex.
    pub fn generate() -> Result<Self, TokenError> {
        use std::io::Read as _;
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(TokenError::Random)?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>().into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant time in the length of the candidate: timing tells nothing about how much of
    /// a guess was right.
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, &byte) in b.iter().enumerate() {
            diff |= usize::from(byte ^ a.get(i % a.len().max(1)).copied().unwrap_or(0));
        }
        diff == 0
    }
}

/// The token a request carries: `Authorization: Bearer T`, or `?token=T` (browsers cannot set
/// headers on websockets, MJPEG players cannot either).
fn presented(request: &Request) -> Option<String> {
    if let Some(auth) = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(token) = auth.strip_prefix("Bearer ") {
            return Some(token.trim().to_string());
        }
    }
    request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=").map(str::to_string)))
}

pub async fn require_token(
    State(token): State<Option<AccessToken>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else { return next.run(request).await };
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match presented(&request) {
        Some(candidate) if token.matches(&candidate) => next.run(request).await,
        Some(_) => (StatusCode::UNAUTHORIZED, Json(json!({"error": "wrong access token"}))).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "this viewer needs its access token (printed when it started)"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly_and_bad_ones_are_refused() {
        let t = AccessToken::new("abcdefghijklmnop").unwrap();
        assert!(t.matches("abcdefghijklmnop"));
        assert!(!t.matches("abcdefghijklmnoq"));
        assert!(!t.matches("abcdefghijklmno"));
        assert!(!t.matches("abcdefghijklmnopq"));
        assert!(!t.matches(""));
        assert!(AccessToken::new("short").is_err());
        assert!(AccessToken::new("has spaces in it, many").is_err());
        let g = AccessToken::generate().unwrap();
        assert_eq!(g.as_str().len(), 32);
        assert!(AccessToken::new(g.as_str()).is_ok());
        assert_ne!(g.as_str(), AccessToken::generate().unwrap().as_str());
        assert_eq!(format!("{g:?}"), "AccessToken(..)");
    }
}
