//! The comparison that motivated the design, on the same frames in the same run: a frame
//! from the camera to the detector's process through our shared-memory ring (the detector's
//! own `read_ns`) versus through ZeroMQ over TCP (a forwarder reads each frame from the ring
//! the moment it is published and sends all its pixels to a sink process, which timestamps
//! their arrival). The ZeroMQ path therefore includes one ring read, a few µs.

use super::procs::free_port;
use ads_shmem_ipc::{clock, FrameReader, FrameReaderOptions, ReadMode, Wait};
use anyhow::Context as _;
use std::collections::HashMap;
use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// frame id → capture→arrival latency in ns, over TCP.
pub type Arrivals = Arc<Mutex<HashMap<u64, u64>>>;

#[derive(Debug)]
pub struct Comparison {
    pub arrivals: Arrivals,
    stop: Arc<AtomicBool>,
    forwarder: Option<std::thread::JoinHandle<()>>,
    sink: Option<std::process::Child>,
}

impl Comparison {
    pub fn start(frames_ring: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        let endpoint = format!("tcp://127.0.0.1:{port}");
        let context = zmq::Context::new();
        let publisher = context.socket(zmq::PUB)?;
        publisher.set_sndhwm(4)?;
        publisher.bind(&endpoint)?;
        let mut sink = Command::new(std::env::current_exe()?)
            .args(["zmq-sink", "--endpoint", &endpoint])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the ZeroMQ sink process")?;
        let stdout = sink.stdout.take().context("sink stdout")?;
        let arrivals: Arrivals = Arc::default();
        let into = Arc::clone(&arrivals);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().ok());
                if let (Some(Some(id)), Some(Some(capture)), Some(Some(arrived))) =
                    (fields.next(), fields.next(), fields.next())
                {
                    if let Ok(mut a) = into.lock() {
                        a.insert(id, arrived.saturating_sub(capture));
                    }
                }
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let ring = frames_ring.to_string();
        let forwarder = std::thread::Builder::new().name("zmq-forwarder".into()).spawn(move || {
            // Keep the context alive as long as the socket.
            let _context = context;
            let options = FrameReaderOptions { mode: ReadMode::Latest, expect: None };
            let Ok(mut reader) = FrameReader::attach(&ring, options) else { return };
            while !stopping.load(Ordering::Relaxed) {
                let Ok(Some(frame)) = reader.read(Wait::Block(Duration::from_millis(100))) else { continue };
                let info = frame.info();
                let mut header = [0u8; 16];
                header[..8].copy_from_slice(&info.stamp.id.to_le_bytes());
                header[8..].copy_from_slice(&info.stamp.capture_wall_ns.to_le_bytes());
                let pixels = frame.pixels().to_vec();
                if frame.finish().is_ok() {
                    let _ = publisher.send_multipart([header.to_vec(), pixels], zmq::DONTWAIT);
                }
            }
        })?;
        Ok(Self { arrivals, stop, forwarder: Some(forwarder), sink: Some(sink) })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(f) = self.forwarder.take() {
            let _ = f.join();
        }
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.kill();
            let _ = sink.wait();
        }
    }
}

impl Drop for Comparison {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The sink process: prints `frame_id capture_ns arrival_ns` per frame, until killed.
pub fn sink(endpoint: &str) -> anyhow::Result<()> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::SUB)?;
    socket.set_subscribe(b"")?;
    socket.set_rcvhwm(4)?;
    socket.connect(endpoint)?;
    let mut out = std::io::stdout().lock();
    loop {
        let parts = socket.recv_multipart(0)?;
        let arrived = clock::wall_ns();
        let Some(header) = parts.first().filter(|h| h.len() == 16) else { continue };
        let id = u64::from_le_bytes(header[..8].try_into()?);
        let capture = u64::from_le_bytes(header[8..].try_into()?);
        use std::io::Write as _;
        writeln!(out, "{id} {capture} {arrived}")?;
        out.flush()?;
    }
}
