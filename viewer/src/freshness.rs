//! Which of the vehicle's states are worth showing. After an outage the link delivers the
//! states that queued while it was down (in the vehicle's socket, in the kernel's buffers),
//! seconds old and all in a burst; the page must show the vehicle as it is, not replay that.
//!
//! A state is shown only if it is newer than the newest shown (of the same run) and not a
//! backlog: its lag, `recv_ns - send_ns`, is within `max_lag` of the smallest lag seen over
//! the last [`BASELINE`] of reception (seconds in which states arrived: an outage, when none
//! do, does not push the lags from before it out). Comparing lags, never one clock with the
//! other, makes any constant offset between the vehicle's and our wall clock irrelevant; the
//! window lets a link that stays slower than before be shown again after [`BASELINE`] rather
//! than never.

use std::collections::VecDeque;
use std::time::Duration;

/// How far back the smallest lag is looked for, in time during which states arrived.
pub const BASELINE: Duration = Duration::from_secs(10);
const BASELINE_BUCKETS: usize = 10;
/// Lags are kept as one minimum per this much receive time (bounded memory).
const BUCKET_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Show,
    /// Sent before the newest state already shown.
    Older,
    /// Sent this much longer ago than the link's usual lag (ms): queued during an outage.
    Backlog {
        late_ms: u64,
    },
}

#[derive(Debug)]
pub struct Freshness {
    max_lag_ns: i128,
    /// (bucket start, smallest lag in it) of the last [`BASELINE_BUCKETS`] seconds in which
    /// a state arrived, oldest first.
    lags: VecDeque<(u64, i128)>,
    /// The newest state shown: (the vehicle's start time, its send time).
    newest: Option<(u64, u64)>,
}

impl Freshness {
    pub fn new(max_lag: Duration) -> Self {
        Self { max_lag_ns: max_lag.as_nanos() as i128, lags: VecDeque::new(), newest: None }
    }

    /// Judges a state the vehicle `started_ns` sent at `send_ns` (its clock) and we received
    /// at `recv_ns` (ours); a state judged [`Verdict::Show`] becomes the newest shown.
    pub fn judge(&mut self, started_ns: u64, send_ns: u64, recv_ns: u64) -> Verdict {
        let lag = i128::from(recv_ns) - i128::from(send_ns);
        let bucket = recv_ns - recv_ns % BUCKET_NS;
        match self.lags.back_mut() {
            Some((start, min)) if *start == bucket => *min = (*min).min(lag),
            _ => self.lags.push_back((bucket, lag)),
        }
        if self.lags.len() > BASELINE_BUCKETS {
            self.lags.pop_front();
        }
        let baseline = self.lags.iter().map(|&(_, min)| min).min().unwrap_or(lag);
        // A restarted vehicle's states are judged afresh.
        if let Some((started, newest_sent)) = self.newest {
            if started == started_ns && send_ns < newest_sent {
                return Verdict::Older;
            }
        }
        if lag - baseline > self.max_lag_ns {
            return Verdict::Backlog { late_ms: ((lag - baseline) / 1_000_000) as u64 };
        }
        self.newest = Some((started_ns, send_ns));
        Verdict::Show
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SKEW: u64 = 5_000 * MS;

    #[test]
    fn a_backlog_after_an_outage_is_dropped_and_fresh_states_shown_whatever_the_clock_skew() {
        let mut f = Freshness::new(Duration::from_secs(1));
        // 30 Hz for 2 s, 10 ms on the way, the vehicle's clock 5 s behind ours.
        let mut t = 100_000 * MS;
        for _ in 0..60 {
            assert_eq!(f.judge(1, t - SKEW, t + 10 * MS), Verdict::Show);
            t += 33 * MS;
        }
        // 10 s outage: the states sent during it arrive in a burst when it ends.
        let back = t + 10_000 * MS;
        let mut late = 0;
        for i in 0..300 {
            let sent = t + i * 33 * MS;
            match f.judge(1, sent - SKEW, back + i * MS / 10) {
                Verdict::Backlog { late_ms } => {
                    assert!(late_ms > 1000);
                    late += 1;
                }
                Verdict::Show => {
                    let age = back + i * MS / 10 - sent;
                    assert!(age <= 1010 * MS, "a state {} ms old shown", age / MS)
                }
                Verdict::Older => panic!("the backlog is in order"),
            }
        }
        assert!(late >= 260, "only {late} of the backlog dropped");
        // Then fresh ones again, and an old one that comes after a newer one is not shown.
        assert_eq!(f.judge(1, back - SKEW, back + 12 * MS), Verdict::Show);
        assert_eq!(f.judge(1, back - SKEW - 20 * MS, back + 13 * MS), Verdict::Older);
        // A restarted vehicle (new start time) is shown even if its clock went back.
        assert_eq!(f.judge(2, back - SKEW - 20 * MS, back + 14 * MS), Verdict::Show);
    }

    #[test]
    fn a_link_that_stays_slow_is_shown_again_after_the_baseline_window() {
        let mut f = Freshness::new(Duration::from_secs(1));
        let mut t = 50_000 * MS;
        assert_eq!(f.judge(1, t, t + 5 * MS), Verdict::Show);
        // From now on everything takes 2 s: dropped at first, shown once the fast past is
        // out of the window.
        let mut shown_at = None;
        for _ in 0..400 {
            t += 50 * MS;
            if f.judge(1, t, t + 2_000 * MS) == Verdict::Show {
                shown_at.get_or_insert(t);
            }
        }
        let after = shown_at.expect("never shown again") - 50_000 * MS;
        assert!(
            after <= BASELINE.as_nanos() as u64 + 2 * BUCKET_NS,
            "shown again only after {} ms",
            after / MS
        );
    }
}
