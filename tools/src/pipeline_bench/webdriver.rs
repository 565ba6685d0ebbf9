//! Just enough of the W3C WebDriver protocol to open a page in headless Chromium and run
//! scripts in it, over plain HTTP to a local chromedriver (no async runtime needed).

use super::procs::{free_port, Proc};
use anyhow::Context as _;
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

#[derive(Debug)]
pub struct Browser {
    pub driver: Proc,
    port: u16,
    session: String,
}

fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    // chromedriver keeps the connection open whatever we ask: read by the length it gives.
    let mut response = Vec::new();
    let mut chunk = [0u8; 65536];
    let (split, head) = loop {
        if let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break (split, String::from_utf8_lossy(&response[..split]).to_ascii_lowercase());
        }
        let n = stream
            .read(&mut chunk)
            .with_context(|| format!("reading chromedriver's answer to {method} {path}"))?;
        anyhow::ensure!(n > 0, "chromedriver closed the connection mid-answer");
        response.extend_from_slice(&chunk[..n]);
    };
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let complete = |r: &[u8]| match length {
        Some(len) => r.len() >= split + 4 + len,
        None => r.ends_with(b"0\r\n\r\n"),
    };
    while !complete(&response) {
        let n = stream
            .read(&mut chunk)
            .with_context(|| format!("reading chromedriver's answer to {method} {path}"))?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
    }
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&response[split + 4..])
    } else {
        response[split + 4..].to_vec()
    };
    let value: Value = serde_json::from_slice(&body).context("WebDriver response is not JSON")?;
    if let Some(error) = value["value"]["error"].as_str() {
        anyhow::bail!("WebDriver {method} {path}: {error}: {}", value["value"]["message"]);
    }
    Ok(value["value"].clone())
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            break;
        }
        body.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
    body
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub fn start() -> anyhow::Result<Self> {
        for tool in [CHROMEDRIVER, CHROMIUM] {
            anyhow::ensure!(Path::new(tool).exists(), "{tool} is missing (scripts/setup.sh installs it)");
        }
        let port = free_port()?;
        let driver = Proc::spawn_group("chromedriver", Path::new(CHROMEDRIVER), &[format!("--port={port}")])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-extensions",
                     "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                     "--window-size=1400,1000",
                     // window.gc(), so the soak can weigh what the page keeps, not garbage.
                     "--js-flags=--expose-gc"],
        }}}});
        let session = request(port, "POST", "/session", Some(&caps))?;
        let session = session["sessionId"].as_str().context("no session id")?.to_string();
        Ok(Self { driver, port, session })
    }

    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        request(self.port, "POST", &format!("/session/{}/url", self.session), Some(&json!({"url": url})))?;
        Ok(())
    }

    pub fn js(&self, script: &str) -> anyhow::Result<Value> {
        let body = json!({"script": script, "args": []});
        request(self.port, "POST", &format!("/session/{}/execute/sync", self.session), Some(&body))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(self.port, "DELETE", &format!("/session/{}", self.session), None);
    }
}
