//! What every ads process sets up: logging to stderr ([`init_tracing`]), and systemd service
//! notifications: `READY=1` once the process is set up, `WATCHDOG=1` from the
//! loop that would hang.
//!
//! Under `Type=notify` with `WatchdogSec=` (configs/systemd/ads-*.service), systemd kills and
//! restarts the process when the pings stop. They therefore come from the loop that would hang
//! (the vehicle's control loop; the detector's frame loop and its wait for the frames ring),
//! never from a side thread, which would keep pinging while the loop is stuck.
//! Without `NOTIFY_SOCKET` (a plain run, a test) every call here is a no-op; with it but no
//! `WATCHDOG_USEC`, only readiness is sent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Pings per watchdog period: systemd's documentation asks for at least two; four leaves room
/// for a loop iteration that runs long (a slow frame) without a restart.
const PINGS_PER_PERIOD: u32 = 4;

/// Tells systemd the process is ready, with a one-line status for `systemctl status`.
pub fn ready(status: &str) {
    let status = status.replace('\n', " ");
    send(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);
}

/// Tells systemd the calling loop is alive. Cheap enough to call on every iteration: it sends
/// at most [`PINGS_PER_PERIOD`] datagrams per watchdog period and does nothing when the
/// watchdog is off.
pub fn watchdog() {
    let Some(watchdog) = watchdog_state() else { return };
    if watchdog.due() {
        send(&[sd_notify::NotifyState::Watchdog]);
    }
}

/// The watchdog's period as systemd set it for this process, if any.
pub fn watchdog_period() -> Option<Duration> {
    watchdog_state().map(|w| w.pacer.period)
}

struct Watchdog {
    pacer: Pacer,
    epoch: Instant,
}

impl Watchdog {
    fn due(&self) -> bool {
        let now_ns = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.pacer.due(now_ns)
    }
}

fn watchdog_state() -> Option<&'static Watchdog> {
    static STATE: OnceLock<Option<Watchdog>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            std::env::var_os("NOTIFY_SOCKET")?;
            // Also checks WATCHDOG_PID, so a child that inherited the variables stays quiet.
            let period = sd_notify::watchdog_enabled()?;
            tracing::info!("systemd watchdog on: period {period:?}, pinging from the main loop");
            Some(Watchdog { pacer: Pacer::new(period), epoch: Instant::now() })
        })
        .as_ref()
}

fn send(states: &[sd_notify::NotifyState<'_>]) {
    // A failing notification socket must not stop the process; say so once, not 4 times a second.
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = sd_notify::notify(states) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!("cannot notify systemd ({e}); the watchdog may restart this process");
        }
    }
}

/// Decides when the next ping is due: the first call, then once per `period / PINGS_PER_PERIOD`.
#[derive(Debug)]
struct Pacer {
    period: Duration,
    interval_ns: u64,
    /// Time of the last ping plus one, so zero means "never".
    last_plus_one_ns: AtomicU64,
}

impl Pacer {
    fn new(period: Duration) -> Self {
        let interval = period / PINGS_PER_PERIOD;
        Self {
            period,
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            last_plus_one_ns: AtomicU64::new(0),
        }
    }

    fn due(&self, now_ns: u64) -> bool {
        let last = self.last_plus_one_ns.load(Ordering::Relaxed);
        if last != 0 && now_ns.saturating_add(1).saturating_sub(last) < self.interval_ns {
            return false;
        }
        self.last_plus_one_ns.store(now_ns.saturating_add(1), Ordering::Relaxed);
        true
    }
}

/// Logs to stderr (stdout may carry data, e.g. the JSON lines of `ads-ring`), filtered by
/// `RUST_LOG`, `info` by default. Called once, first thing, by every binary.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ping_is_due_at_once_then_four_per_period() {
        let pacer = Pacer::new(Duration::from_secs(2));
        let ms = |m: u64| m * 1_000_000;
        assert!(pacer.due(0), "the first call pings, even at time zero");
        assert!(!pacer.due(ms(1)));
        assert!(!pacer.due(ms(499)));
        assert!(pacer.due(ms(500)));
        assert!(!pacer.due(ms(999)));
        // A late iteration pings at once, and the next interval counts from then.
        assert!(pacer.due(ms(1700)));
        assert!(!pacer.due(ms(2100)));
        assert!(pacer.due(ms(2200)));
        let pings = (0..2000u64).filter(|t| pacer.due(ms(3000 + t))).count();
        assert_eq!(pings, 4, "one every 500 ms over 2 s");
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_nothing_fails() {
        // The test harness runs without NOTIFY_SOCKET, as a plain run does.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert_eq!(watchdog_period(), None);
            ready("test");
            watchdog();
        }
    }
}
