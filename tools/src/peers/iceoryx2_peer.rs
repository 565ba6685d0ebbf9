//! iceoryx2 publish-subscribe between processes: the zero-copy shared-memory middleware our
//! ring is measured against.
//!
//! Frames travel as `[u8]` slices loaned from the publisher's shared-memory data segment, so
//! the payload is written once, in place, and nothing is copied on the way.
//!
//! # Waiting
//!
//! - [`Wait::BusyPoll`]: the receiver spins on `Subscriber::receive`; nobody notifies.
//! - [`Wait::Blocking`]: a second service, an event named `<service>/wakeup`, carries one
//!   notification per frame, sent right after the frame. The receiver drains its subscriber,
//!   then sleeps in `Listener::timed_wait`. Notifications that arrive while it is draining stay
//!   pending in the listener, so the wait after them returns at once and no frame is slept
//!   through; the timed wait (not a blocking one) is what lets the deadline end the run.
//!
//! # Startup and shutdown
//!
//! Either side may start first: both open-or-create the services with identical settings.
//! iceoryx2 only delivers to subscribers that exist at send time (the service has no history),
//! so the publisher waits until a subscriber is registered before the first frame. Afterwards
//! it waits until the subscriber has gone again: the receiver drops its subscriber only when it
//! has the last frame or has given up, and a publisher that left earlier could take frames
//! still queued for it along. Both waits are bounded by [`PeerRun::deadline`].
//!
//! # Resources
//!
//! Locals are declared node, services, ports, so they drop in the reverse order (ports first,
//! the node last) and an orderly run leaves nothing behind. A process that dies mid-run leaves
//! its node's files under `/tmp/iceoryx2/` and its segments in `/dev/shm/`; every call first
//! runs iceoryx2's dead-node cleanup, which removes those of any dead node it can access.

use std::time::Duration;

use anyhow::Context as _;
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::{event, publish_subscribe};

use super::{fill_byte, stamp_frame, write_index, Deadline, Pacer, PeerRun, Received, Tally, Wait};
use ads_shmem_ipc::clock::monotonic_ns;

/// Inter-process services: `local::Service` would only reach threads of the same process.
type Ipc = ipc::Service;
type Frames = publish_subscribe::PortFactory<Ipc, [u8], ()>;

/// Appended to the frame service's name to name the wake-up event service.
const WAKEUP_SUFFIX: &str = "/wakeup";
/// How often the publisher looks for the subscriber to appear or leave.
const PRESENCE_POLL: Duration = Duration::from_millis(1);
/// How long a blocking receiver sleeps before looking at the deadline again.
const WAIT_SLICE: Duration = Duration::from_millis(50);
/// Shared memory the subscriber's queue may pin: like the ZeroMQ high-water marks, generous for
/// small frames (a descheduled receiver must not lose any) and bounded for large ones.
const QUEUE_BYTES: usize = 64 << 20;

/// Publishes `run` on `service` once a subscriber is there; `wait` must match the receiver's,
/// since only [`Wait::Blocking`] sends the wake-up notifications.
pub fn publish(service: &str, run: &PeerRun, wait: Wait) -> anyhow::Result<()> {
    run.validate()?;
    let deadline = Deadline::after(run.deadline);
    // Drop order is the reverse of this: ports, then services, then the node.
    let node = create_node("ads-peer-publisher")?;
    let frames = open_frames(&node, service, run)?;
    let wakeup = open_wakeup(&node, service, wait)?;
    let publisher = frames
        .publisher_builder()
        .initial_max_slice_len(run.frame_bytes)
        .create()
        .context("creating iceoryx2 publisher")?;
    let notifier: Option<Notifier<Ipc>> = wakeup
        .as_ref()
        .map(|e| e.notifier_builder().create())
        .transpose()
        .context("creating iceoryx2 notifier")?;

    while frames.dynamic_config().number_of_subscribers() == 0 {
        anyhow::ensure!(!deadline.passed(), "no iceoryx2 subscriber on {service} before the deadline");
        std::thread::sleep(PRESENCE_POLL);
    }

    let pacer = Pacer::start(run.interval_ns);
    for index in 0..run.total() {
        let sample =
            publisher.loan_slice_uninit(run.frame_bytes).with_context(|| format!("loaning frame {index}"))?;
        // The only way to initialise loaned memory without `unsafe`; a constant closure
        // compiles down to a memset.
        let fill = fill_byte(index);
        let mut sample = sample.write_from_fn(|_| fill);
        write_index(sample.payload_mut(), index);
        pacer.wait_for(index);
        stamp_frame(sample.payload_mut());
        sample.send().with_context(|| format!("sending frame {index}"))?;
        if let Some(notifier) = &notifier {
            notifier.notify().with_context(|| format!("notifying frame {index}"))?;
        }
    }

    while frames.dynamic_config().number_of_subscribers() > 0 && !deadline.passed() {
        std::thread::sleep(PRESENCE_POLL);
    }
    Ok(())
}

/// Receives `run` from `service`.
///
/// Returns once the last index has arrived or the deadline has passed, whichever is first;
/// what has not arrived by then is counted as lost.
pub fn receive(service: &str, run: &PeerRun, wait: Wait) -> anyhow::Result<Received> {
    run.validate()?;
    let deadline = Deadline::after(run.deadline);
    // Drop order is the reverse of this: ports, then services, then the node.
    let node = create_node("ads-peer-receiver")?;
    let frames = open_frames(&node, service, run)?;
    let wakeup = open_wakeup(&node, service, wait)?;
    let subscriber = frames
        .subscriber_builder()
        .buffer_size(queue_depth(run.frame_bytes))
        .create()
        .context("creating iceoryx2 subscriber")?;
    let listener: Option<Listener<Ipc>> = wakeup
        .as_ref()
        .map(|e| e.listener_builder().create())
        .transpose()
        .context("creating iceoryx2 listener")?;

    let mut tally = Tally::new(run);
    while !tally.done() {
        let Some(left) = deadline.remaining() else {
            break;
        };
        match subscriber.receive().context("receiving iceoryx2 sample")? {
            Some(sample) => {
                let now_ns = monotonic_ns();
                tally.record(sample.payload(), now_ns);
            }
            None => match &listener {
                Some(listener) => {
                    listener
                        .timed_wait(|_| {}, left.min(WAIT_SLICE))
                        .context("waiting on iceoryx2 listener")?;
                }
                None => std::hint::spin_loop(),
            },
        }
    }
    // Tells the publisher (which watches the subscriber count) that it may go.
    drop(subscriber);
    Ok(tally.finish())
}

/// A node without iceoryx2's SIGINT/SIGTERM handlers, which would otherwise swallow the
/// signals a harness uses to stop a peer process; also reaps what dead peers left behind.
fn create_node(name: &str) -> anyhow::Result<Node<Ipc>> {
    let name: NodeName =
        name.try_into().with_context(|| format!("{name:?} is not a valid iceoryx2 node name"))?;
    let node = NodeBuilder::new()
        .name(&name)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Ipc>()
        .context("creating iceoryx2 node")?;
    // Best effort: a node we may not clean (another user's) is skipped, and the services
    // below still open unless that node's stale state conflicts with them.
    node.try_cleanup_dead_nodes();
    Ok(node)
}

/// Both sides must ask for exactly these settings, since whichever comes second opens the
/// service the other created and iceoryx2 checks that the settings are compatible.
fn open_frames(node: &Node<Ipc>, service: &str, run: &PeerRun) -> anyhow::Result<Frames> {
    let name: ServiceName =
        service.try_into().with_context(|| format!("{service:?} is not a valid iceoryx2 service name"))?;
    node.service_builder(&name)
        .publish_subscribe::<[u8]>()
        // One publisher, one subscriber: the data segment is sized for every port the service
        // allows, and each queued frame slot costs frame_bytes of shared memory.
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(queue_depth(run.frame_bytes))
        .subscriber_max_borrowed_samples(1)
        // A full queue drops its oldest frame (the receiver counts it lost) instead of
        // stalling the publisher, matching what a ZeroMQ PUB does at its high-water mark.
        .enable_safe_overflow(true)
        .open_or_create()
        .with_context(|| format!("opening iceoryx2 publish-subscribe service {service}"))
}

/// The wake-up event service, only when the receiver is to block.
fn open_wakeup(
    node: &Node<Ipc>,
    service: &str,
    wait: Wait,
) -> anyhow::Result<Option<event::PortFactory<Ipc>>> {
    if wait == Wait::BusyPoll {
        return Ok(None);
    }
    let wakeup = format!("{service}{WAKEUP_SUFFIX}");
    let name: ServiceName = wakeup
        .as_str()
        .try_into()
        .with_context(|| format!("{wakeup:?} is not a valid iceoryx2 service name"))?;
    let factory = node
        .service_builder(&name)
        .event()
        .open_or_create()
        .with_context(|| format!("opening iceoryx2 event service {wakeup}"))?;
    Ok(Some(factory))
}

/// Frames the subscriber's queue holds; see [`QUEUE_BYTES`].
fn queue_depth(frame_bytes: usize) -> usize {
    (QUEUE_BYTES / frame_bytes.max(1)).clamp(8, 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::thread;

    fn run() -> PeerRun {
        PeerRun {
            frames: 2000,
            warmup: 50,
            frame_bytes: 64 << 10,
            interval_ns: 50_000,
            deadline: Duration::from_secs(30),
        }
    }

    fn service(tag: &str) -> String {
        format!("ads/peer-test/{}/{tag}", std::process::id())
    }

    /// Runs both sides in threads, optionally starting one of them late.
    fn exchange(service: &str, wait: Wait, receiver_delay: Duration, publisher_delay: Duration) {
        let run = run();
        let received = thread::scope(|s| {
            let receiver = s.spawn(|| {
                thread::sleep(receiver_delay);
                receive(service, &run, wait).unwrap()
            });
            thread::sleep(publisher_delay);
            publish(service, &run, wait).unwrap();
            receiver.join().unwrap()
        });
        assert_eq!(received.lost, 0, "lost frames on {service}");
        assert_eq!(received.corrupt, 0, "corrupt frames on {service}");
        assert_eq!(received.latencies_ns.len() as u64, run.frames);
        assert!(received.latencies_ns.iter().all(|&l| l < 10_000_000_000));
    }

    #[test]
    fn blocking() {
        exchange(&service("blocking"), Wait::Blocking, Duration::ZERO, Duration::ZERO);
    }

    #[test]
    fn busy_poll() {
        exchange(&service("busy"), Wait::BusyPoll, Duration::ZERO, Duration::ZERO);
    }

    #[test]
    fn receiver_starts_late() {
        exchange(&service("late-receiver"), Wait::Blocking, Duration::from_millis(300), Duration::ZERO);
    }

    #[test]
    fn publisher_starts_late() {
        exchange(&service("late-publisher"), Wait::BusyPoll, Duration::ZERO, Duration::from_millis(300));
    }

    #[test]
    fn same_service_twice_in_a_row() {
        let name = service("repeat");
        exchange(&name, Wait::Blocking, Duration::ZERO, Duration::ZERO);
        exchange(&name, Wait::Blocking, Duration::ZERO, Duration::ZERO);
    }

    /// Set (to a service name) only in the child process that `cross_process` spawns.
    const CHILD_SERVICE: &str = "ADS_PEER_TEST_ICEORYX2_CHILD";
    /// Set in the child that `stale_state_of_a_killed_publisher_is_cleaned_up` kills mid-run.
    const CHILD_SLOW: &str = "ADS_PEER_TEST_ICEORYX2_SLOW";

    /// The publishing half of the cross-process tests; does nothing unless spawned by them.
    #[test]
    #[ignore = "child half of the cross-process tests"]
    fn child_publisher() {
        let Ok(name) = std::env::var(CHILD_SERVICE) else {
            return;
        };
        let run = if std::env::var_os(CHILD_SLOW).is_some() {
            PeerRun { frames: 1_000_000, interval_ns: 1_000_000, ..run() }
        } else {
            run()
        };
        publish(&name, &run, Wait::Blocking).unwrap();
    }

    /// Starts `child_publisher` of this test binary in its own process.
    fn spawn_publisher(name: &str, slow: bool) -> Child {
        let module = module_path!().split_once("::").unwrap().1;
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", &format!("{module}::child_publisher"), "--ignored"])
            .env(CHILD_SERVICE, name)
            .stdout(Stdio::null());
        if slow {
            command.env(CHILD_SLOW, "1");
        }
        command.spawn().unwrap()
    }

    #[test]
    fn cross_process() {
        let name = service("cross-process");
        let mut child = spawn_publisher(&name, false);
        let received = receive(&name, &run(), Wait::Blocking).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!((received.lost, received.corrupt), (0, 0));
        assert_eq!(received.latencies_ns.len() as u64, run().frames);
    }

    #[test]
    fn stale_state_of_a_killed_publisher_is_cleaned_up() {
        let name = service("killed");
        let mut child = spawn_publisher(&name, true);
        let short = PeerRun { deadline: Duration::from_millis(500), ..run() };
        let received = receive(&name, &short, Wait::Blocking).unwrap();
        assert!(!received.latencies_ns.is_empty(), "the slow child never published");
        child.kill().unwrap();
        child.wait().unwrap();
        // The dead publisher's node, ports and segments are still registered with the service.
        exchange(&name, Wait::Blocking, Duration::ZERO, Duration::ZERO);
    }

    #[test]
    fn receiver_without_publisher_gives_up_at_deadline() {
        let run = PeerRun { deadline: Duration::from_millis(300), ..run() };
        let received = receive(&service("nobody"), &run, Wait::Blocking).unwrap();
        assert_eq!(received.lost, run.frames);
        assert!(received.latencies_ns.is_empty());
    }

    #[test]
    fn publisher_without_receiver_fails_at_deadline() {
        let run = PeerRun { deadline: Duration::from_millis(300), ..run() };
        assert!(publish(&service("lonely"), &run, Wait::BusyPoll).is_err());
    }
}
