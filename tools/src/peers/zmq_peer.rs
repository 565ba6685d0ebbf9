//! ZeroMQ PUB/SUB, the path the ring replaces in the product, over `ipc://` or `tcp://`.
//!
//! # Startup handshake (slow joiner)
//!
//! A PUB socket silently drops every message sent before the subscriber's subscription has
//! reached it, and a finished SUB connect does not mean that has happened. So, following the
//! ZeroMQ guide's robust variant of "node coordination":
//!
//! 1. The publisher binds its PUB on `endpoint` and a PULL on the *control endpoint* (below),
//!    then sends a short [`HELLO`] message on the PUB every millisecond.
//! 2. The receiver connects a SUB (subscribed to everything) and a PUSH to the control
//!    endpoint. The first [`HELLO`] it gets proves its subscription is live at the publisher;
//!    it answers with [`READY`] on the PUSH.
//! 3. On [`READY`] the publisher stops saying hello and starts the frames. Any hellos still in
//!    flight are shorter than a frame header, so the receiver skips them.
//! 4. When the receiver has the last index (or its deadline passes) it sends [`DONE`]; the
//!    publisher keeps its PUB open until then, because closing it with frames still queued
//!    would discard them. Both waits are bounded by [`PeerRun::deadline`], and every socket
//!    has a bounded linger, so neither side can hang on a vanished peer.
//!
//! Either side may start first: a SUB or PUSH connecting to an endpoint nobody has bound yet
//! retries every [`RECONNECT_MS`].
//!
//! The control endpoint is derived from the data endpoint: `ipc://PATH` gets `ipc://PATH.ctl`,
//! `tcp://HOST:PORT` gets `tcp://HOST:PORT+1` — so a TCP run needs two adjacent free ports.

use anyhow::Context as _;

use super::{fill_frame, stamp_frame, Deadline, Pacer, PeerRun, Received, Tally, Wait};
use ads_shmem_ipc::clock::monotonic_ns;

/// Shorter than [`super::HEADER_BYTES`], so it can never be mistaken for a frame.
const HELLO: &[u8] = b"ads-hello";
/// Receiver to publisher: my subscription is live, start the frames.
const READY: &[u8] = b"ready";
/// Receiver to publisher: I am finished, you may close.
const DONE: &[u8] = b"done";

/// How often the publisher repeats [`HELLO`] while nobody has answered.
const HELLO_EVERY_MS: i64 = 1;
/// Reconnect interval for a connect that finds nothing bound yet; ZeroMQ's default of 100 ms
/// would add up to that much to every run where the receiver starts first.
const RECONNECT_MS: i32 = 10;
/// How long a blocking receive sleeps before looking at the deadline again.
const RECV_SLICE_MS: i32 = 50;
/// Lets a [`DONE`] sent right before the receiver closes still reach the publisher, without
/// letting a vanished publisher hold the receiver up for longer than this.
const CONTROL_LINGER_MS: i32 = 500;
/// Bytes of frames either side may queue before ZeroMQ drops (PUB) or stops reading (SUB).
/// Counting bytes rather than messages keeps 1.4 MB frames from pinning gigabytes while still
/// giving small frames tens of milliseconds of slack on a busy machine.
const QUEUE_BYTES: usize = 256 << 20;

/// Publishes `run` on `endpoint` (bound here) once a receiver has completed the handshake.
pub fn publish(endpoint: &str, run: &PeerRun) -> anyhow::Result<()> {
    run.validate()?;
    let deadline = Deadline::after(run.deadline);
    let control_endpoint = control_endpoint(endpoint)?;
    remove_stale_ipc_file(endpoint)?;
    remove_stale_ipc_file(&control_endpoint)?;

    let context = zmq::Context::new();
    // High-water marks only apply to pipes created after they are set, so before bind.
    let publisher = context.socket(zmq::PUB).context("creating PUB socket")?;
    publisher.set_sndhwm(high_water_mark(run.frame_bytes))?;
    // Frames only need to outlive the socket until DONE, which we wait for explicitly.
    publisher.set_linger(0)?;
    publisher.bind(endpoint).with_context(|| format!("binding PUB to {endpoint}"))?;
    let control = context.socket(zmq::PULL).context("creating PULL socket")?;
    control.set_linger(0)?;
    control.bind(&control_endpoint).with_context(|| format!("binding control PULL to {control_endpoint}"))?;

    let result = stream(&publisher, &control, run, deadline);

    drop(control);
    drop(publisher);
    drop(context);
    // libzmq unlinks its ipc files on close; this only catches a version that does not.
    remove_stale_ipc_file(endpoint)?;
    remove_stale_ipc_file(&control_endpoint)?;
    result
}

/// Handshake, frames, then the wait for [`DONE`].
fn stream(
    publisher: &zmq::Socket,
    control: &zmq::Socket,
    run: &PeerRun,
    deadline: Deadline,
) -> anyhow::Result<()> {
    loop {
        publisher.send(HELLO, 0).context("sending hello")?;
        if control_message(control, HELLO_EVERY_MS)?.as_deref() == Some(READY) {
            break;
        }
        anyhow::ensure!(!deadline.passed(), "no ZeroMQ subscriber answered the hello before the deadline");
    }

    let pacer = Pacer::start(run.interval_ns);
    for index in 0..run.total() {
        // A fresh message per frame: ZeroMQ takes ownership of the buffer on send, so this is
        // the zero-copy way to hand it a frame.
        let mut message = zmq::Message::with_size(run.frame_bytes);
        fill_frame(&mut message, index);
        pacer.wait_for(index);
        stamp_frame(&mut message);
        publisher.send(message, 0).with_context(|| format!("sending frame {index}"))?;
    }

    // A receiver that never says DONE (crashed, or gave up) is its own problem: it reports
    // the frames it missed, and this side has nothing more to do.
    while let Some(left) = deadline.remaining() {
        let slice = i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1);
        if control_message(control, slice.min(i64::from(RECV_SLICE_MS)))?.as_deref() == Some(DONE) {
            break;
        }
    }
    Ok(())
}

/// The next control message if one arrives within `timeout_ms`.
fn control_message(control: &zmq::Socket, timeout_ms: i64) -> anyhow::Result<Option<Vec<u8>>> {
    if control.poll(zmq::POLLIN, timeout_ms).context("polling control socket")? == 0 {
        return Ok(None);
    }
    match control.recv_bytes(zmq::DONTWAIT) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(zmq::Error::EAGAIN) => Ok(None),
        Err(e) => Err(e).context("receiving on control socket"),
    }
}

/// Receives `run` from the publisher bound at `endpoint`.
///
/// Returns once the last index has arrived or the deadline has passed, whichever is first;
/// what has not arrived by then is counted as lost.
pub fn receive(endpoint: &str, run: &PeerRun, wait: Wait) -> anyhow::Result<Received> {
    run.validate()?;
    let deadline = Deadline::after(run.deadline);
    let control_endpoint = control_endpoint(endpoint)?;

    let context = zmq::Context::new();
    // High-water marks only apply to pipes created after they are set, so before connect.
    let subscriber = context.socket(zmq::SUB).context("creating SUB socket")?;
    subscriber.set_rcvhwm(high_water_mark(run.frame_bytes))?;
    subscriber.set_linger(0)?;
    subscriber.set_reconnect_ivl(RECONNECT_MS)?;
    subscriber.set_rcvtimeo(RECV_SLICE_MS)?;
    subscriber.set_subscribe(b"")?;
    subscriber.connect(endpoint).with_context(|| format!("connecting SUB to {endpoint}"))?;
    let control = context.socket(zmq::PUSH).context("creating PUSH socket")?;
    control.set_linger(CONTROL_LINGER_MS)?;
    control.set_reconnect_ivl(RECONNECT_MS)?;
    control
        .connect(&control_endpoint)
        .with_context(|| format!("connecting control PUSH to {control_endpoint}"))?;

    let flags = match wait {
        // Blocks in the kernel for up to RECV_SLICE_MS (the receive timeout set above).
        Wait::Blocking => 0,
        Wait::BusyPoll => zmq::DONTWAIT,
    };
    let mut tally = Tally::new(run);
    let mut message = zmq::Message::new();
    let mut announced = false;
    while !tally.done() && !deadline.passed() {
        match subscriber.recv(&mut message, flags) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => {
                std::hint::spin_loop();
                continue;
            }
            Err(e) => return Err(e).context("receiving on SUB"),
        }
        let now_ns = monotonic_ns();
        if &*message == HELLO {
            // A PUSH with a pending connect queues the message, so EAGAIN is unexpected here;
            // if it happens anyway, the next hello retries.
            if !announced {
                announced = send_control(&control, READY)?;
            }
            continue;
        }
        tally.record(&message, now_ns);
    }
    send_control(&control, DONE)?;
    Ok(tally.finish())
}

/// Sends without blocking; `false` if ZeroMQ could not queue it right now.
fn send_control(control: &zmq::Socket, what: &[u8]) -> anyhow::Result<bool> {
    match control.send(what, zmq::DONTWAIT) {
        Ok(()) => Ok(true),
        Err(zmq::Error::EAGAIN) => Ok(false),
        Err(e) => Err(e).context("sending on control socket"),
    }
}

/// Messages, not bytes, are what ZeroMQ counts; see [`QUEUE_BYTES`].
fn high_water_mark(frame_bytes: usize) -> i32 {
    let messages = (QUEUE_BYTES / frame_bytes.max(1)).clamp(16, 10_000);
    i32::try_from(messages).unwrap_or(10_000)
}

/// Where the handshake runs; see the module docs.
fn control_endpoint(endpoint: &str) -> anyhow::Result<String> {
    if let Some(path) = endpoint.strip_prefix("ipc://") {
        return Ok(format!("ipc://{path}.ctl"));
    }
    if let Some(address) = endpoint.strip_prefix("tcp://") {
        let (host, port) = address.rsplit_once(':').with_context(|| format!("{endpoint} has no port"))?;
        let port: u16 = port.parse().with_context(|| format!("{endpoint} has no numeric port"))?;
        let next = port
            .checked_add(1)
            .with_context(|| format!("{endpoint}: the control port would be {port} + 1"))?;
        return Ok(format!("tcp://{host}:{next}"));
    }
    anyhow::bail!("{endpoint}: only ipc:// and tcp:// endpoints are supported")
}

/// A socket file left by a crashed publisher makes the next bind fail with EADDRINUSE.
fn remove_stale_ipc_file(endpoint: &str) -> anyhow::Result<()> {
    let Some(path) = endpoint.strip_prefix("ipc://") else {
        return Ok(());
    };
    if path.starts_with('@') {
        // Abstract namespace: there is no file.
        return Ok(());
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing stale socket file {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::process::{Command, Stdio};
    use std::thread;
    use std::time::Duration;

    fn run() -> PeerRun {
        PeerRun {
            frames: 2000,
            warmup: 50,
            frame_bytes: 64 << 10,
            interval_ns: 50_000,
            deadline: Duration::from_secs(30),
        }
    }

    /// Two adjacent free ports (data, control). Another process may grab one between this check
    /// and the bind; the retrying loop makes that unlikely enough for a test.
    fn free_port_pair() -> u16 {
        loop {
            let first = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = first.local_addr().unwrap().port();
            let Some(next) = port.checked_add(1) else {
                continue;
            };
            if TcpListener::bind(("127.0.0.1", next)).is_ok() {
                return port;
            }
        }
    }

    fn ipc_endpoint(tag: &str) -> String {
        format!("ipc:///tmp/ads-zmq-peer-{}-{tag}.sock", std::process::id())
    }

    fn tcp_endpoint() -> String {
        format!("tcp://127.0.0.1:{}", free_port_pair())
    }

    /// Runs both sides in threads, optionally starting one of them late.
    fn exchange(endpoint: &str, wait: Wait, receiver_delay: Duration, publisher_delay: Duration) {
        let run = run();
        let received = thread::scope(|s| {
            let receiver = s.spawn(|| {
                thread::sleep(receiver_delay);
                receive(endpoint, &run, wait).unwrap()
            });
            thread::sleep(publisher_delay);
            publish(endpoint, &run).unwrap();
            receiver.join().unwrap()
        });
        assert_eq!(received.lost, 0, "lost frames over {endpoint}");
        assert_eq!(received.corrupt, 0, "corrupt frames over {endpoint}");
        assert_eq!(received.latencies_ns.len() as u64, run.frames);
        assert!(received.latencies_ns.iter().all(|&l| l < 10_000_000_000));
    }

    #[test]
    fn ipc_blocking() {
        exchange(&ipc_endpoint("blocking"), Wait::Blocking, Duration::ZERO, Duration::ZERO);
    }

    #[test]
    fn ipc_busy_poll() {
        exchange(&ipc_endpoint("busy"), Wait::BusyPoll, Duration::ZERO, Duration::ZERO);
    }

    #[test]
    fn tcp_blocking() {
        exchange(&tcp_endpoint(), Wait::Blocking, Duration::ZERO, Duration::ZERO);
    }

    #[test]
    fn tcp_busy_poll() {
        exchange(&tcp_endpoint(), Wait::BusyPoll, Duration::ZERO, Duration::ZERO);
    }

    #[test]
    fn receiver_starts_late() {
        exchange(&ipc_endpoint("late-receiver"), Wait::Blocking, Duration::from_millis(300), Duration::ZERO);
    }

    #[test]
    fn publisher_starts_late() {
        exchange(&tcp_endpoint(), Wait::Blocking, Duration::ZERO, Duration::from_millis(300));
    }

    /// Set (to an endpoint) only in the child process that `cross_process` spawns.
    const CHILD_ENDPOINT: &str = "ADS_PEER_TEST_ZMQ_CHILD";

    /// The publishing half of `cross_process`; does nothing unless spawned by it.
    #[test]
    #[ignore = "child half of cross_process"]
    fn child_publisher() {
        if let Ok(endpoint) = std::env::var(CHILD_ENDPOINT) {
            publish(&endpoint, &run()).unwrap();
        }
    }

    #[test]
    fn cross_process() {
        for endpoint in [ipc_endpoint("cross-process"), tcp_endpoint()] {
            let module = module_path!().split_once("::").unwrap().1;
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", &format!("{module}::child_publisher"), "--ignored"])
                .env(CHILD_ENDPOINT, &endpoint)
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let received = receive(&endpoint, &run(), Wait::Blocking).unwrap();
            assert!(child.wait().unwrap().success());
            assert_eq!((received.lost, received.corrupt), (0, 0), "over {endpoint}");
            assert_eq!(received.latencies_ns.len() as u64, run().frames);
        }
    }

    #[test]
    fn receiver_without_publisher_gives_up_at_deadline() {
        let run = PeerRun { deadline: Duration::from_millis(300), ..run() };
        let received = receive(&ipc_endpoint("nobody"), &run, Wait::Blocking).unwrap();
        assert_eq!(received.lost, run.frames);
        assert!(received.latencies_ns.is_empty());
    }

    #[test]
    fn publisher_without_receiver_fails_at_deadline() {
        let run = PeerRun { deadline: Duration::from_millis(300), ..run() };
        assert!(publish(&ipc_endpoint("lonely"), &run).is_err());
    }

    #[test]
    fn control_endpoints() {
        assert_eq!(control_endpoint("ipc:///tmp/x.sock").unwrap(), "ipc:///tmp/x.sock.ctl");
        assert_eq!(control_endpoint("tcp://127.0.0.1:5555").unwrap(), "tcp://127.0.0.1:5556");
        assert!(control_endpoint("tcp://127.0.0.1:65535").is_err());
        assert!(control_endpoint("inproc://x").is_err());
    }
}
