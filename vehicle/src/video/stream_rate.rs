//! The bit rate of one viewer's H.264 stream, from how its access units are delivered.
//!
//! JPEG frames are sized per frame, so a goodput estimate from credit timing can drive them
//! directly. A stream's frames cannot: most are delta frames far smaller than a link's
//! burst allowance (a shaper's bucket, a radio's aggregate), which pass at once and would
//! claim any rate, while a keyframe is several times the rest and takes its true airtime.
//! So this follows what WebRTC's congestion control does, on the signals the credits give:
//!
//! * **Late means too fast.** A unit whose credit comes back later than its airtime at the
//!   assumed link rate plus the target age queued somewhere: the rate drops at once by
//!   [`CUT`], at most once per [`CUT_HOLD_NS`] (units already in flight were made at the old
//!   rate).
//! * **Big units measure the link.** A keyframe (or any unit worth [`PROBE_SECONDS`] of the
//!   stream) is a probe: the rate may jump up to a share of its sample, and never stays
//!   above what the probes of the last [`PROBE_WINDOW_NS`] measured.
//! * **Fresh and busy means room.** While units arrive well within the target age and the
//!   encoder actually fills its rate, the rate rises by [`RISE_PER_S`] a second.
//!
//! Pure logic on the monotonic clock, tested against a simulated link.

use std::collections::VecDeque;

const NS_PER_S: f64 = 1e9;
/// Share of a measured link rate the stream is set to (the rest: state, slack, keyframes).
pub const UTILISATION: f64 = 0.8;
/// Rate a stream starts at until its first probe (the joining keyframe) measures the link.
pub const START_BPS: f64 = 1e6;
/// Multiplicative rise per second of fresh, busy delivery (GCC rises 8 %/s; faster here, so
/// a stream cut by one late keyframe is back within seconds).
const RISE_PER_S: f64 = 1.15;
/// What a late unit cuts the rate to.
const CUT: f64 = 0.85;
/// A unit this many target ages late: the link is saturated (see `delivered`).
const DEEP_LATE: u64 = 3;
/// Window of the delivered rate a deep cut goes to.
const DELIVERED_WINDOW_NS: u64 = 500_000_000;
/// After a cut, no other cut and no rise for this long.
const CUT_HOLD_NS: u64 = 300_000_000;
/// A unit carrying this many seconds of the stream's rate is a probe...
const PROBE_SECONDS: f64 = 0.1;
/// ...if it is at least this big.
const PROBE_MIN_BYTES: usize = 8_000;
/// The first bytes of a unit may pass at once (a shaper's bucket, a radio's aggregate): a
/// probe's sample does not count them, so it reads low rather than high.
const BURST_BYTES: usize = 4_000;
/// The most one probe may raise the rate by.
const PROBE_MAX_RISE: f64 = 2.0;
/// How long a probe's sample caps the rate.
const PROBE_WINDOW_NS: u64 = 5_000_000_000;
/// Sent rate below this share of the encoder's rate: the picture, not the link, is the limit
/// (a still scene), and delivery says nothing about room for more.
const BUSY_SHARE: f64 = 0.6;

/// One delivered unit, as the session saw it.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub bytes: usize,
    /// Sent to credited.
    pub delivery_ns: u64,
    /// The part of that when the link was busy with this unit (after the previous credit).
    pub busy_ns: u64,
    pub keyframe: bool,
    /// Video sent to this viewer over the last second, bit/s.
    pub sent_bps: f64,
    /// The bit rate its encoder was set to (the tier's), bit/s.
    pub encoder_bps: f64,
}

#[derive(Debug, Clone)]
pub struct StreamRate {
    bps: f64,
    min_bps: f64,
    max_bps: f64,
    last_cut_ns: Option<u64>,
    last_rise_ns: Option<u64>,
    probes: VecDeque<(u64, f64)>,
    /// (credited at, bytes) of the last [`DELIVERED_WINDOW_NS`].
    credited: VecDeque<(u64, usize)>,
    pub cuts: u64,
}

impl StreamRate {
    pub fn new(min_bps: f64, max_bps: f64) -> Self {
        Self {
            bps: START_BPS.clamp(min_bps, max_bps),
            min_bps,
            max_bps,
            last_cut_ns: None,
            last_rise_ns: None,
            probes: VecDeque::new(),
            credited: VecDeque::new(),
            cuts: 0,
        }
    }

    /// The rate the stream should be encoded at, bit/s.
    pub fn bps(&self) -> f64 {
        self.bps
    }

    /// The link rate this assumes (what pacing may send at), bit/s.
    pub fn link_bps(&self) -> f64 {
        self.bps / UTILISATION
    }

    /// Lowers the ceiling (a cap the viewer or the configuration sets).
    pub fn cap(&mut self, max_bps: f64) {
        self.max_bps = max_bps.max(self.min_bps);
        self.bps = self.bps.min(self.max_bps);
    }

    pub fn delivered(&mut self, unit: Delivery, target_age_ns: u64, now_ns: u64) {
        let counted = unit.bytes.saturating_sub(BURST_BYTES);
        let sample = counted as f64 * 8.0 / (unit.busy_ns.max(100_000) as f64 / NS_PER_S);
        let probe = (unit.keyframe || unit.bytes as f64 * 8.0 >= self.bps * PROBE_SECONDS)
            && unit.bytes >= PROBE_MIN_BYTES;
        if probe {
            self.probes.push_back((now_ns, sample));
        }
        while self.probes.front().is_some_and(|&(t, _)| now_ns.saturating_sub(t) > PROBE_WINDOW_NS) {
            self.probes.pop_front();
        }
        self.credited.push_back((now_ns, unit.bytes));
        while self.credited.front().is_some_and(|&(t, _)| now_ns.saturating_sub(t) > DELIVERED_WINDOW_NS) {
            self.credited.pop_front();
        }
        let holding = self.last_cut_ns.is_some_and(|t| now_ns.saturating_sub(t) < CUT_HOLD_NS);
        let airtime_ns = unit.bytes as f64 * 8.0 / self.link_bps() * NS_PER_S;
        let late = unit.delivery_ns as f64 > airtime_ns + target_age_ns as f64;
        if late {
            if !holding {
                // Multiplicative: one unit's sample may include others' bytes ahead of it in
                // the queue (the state, another viewer's frames) and read far too low...
                self.bps *= CUT;
                // ...but a queue this long means the link is saturated, so what it delivered
                // lately is its rate: a link that dropped from 20 to 2 Mbit/s is followed in
                // one step, not in five.
                if unit.delivery_ns as f64 > airtime_ns + (DEEP_LATE * target_age_ns) as f64 {
                    let delivered: usize = self.credited.iter().map(|&(_, b)| b).sum();
                    let rate = delivered as f64 * 8.0 / (DELIVERED_WINDOW_NS as f64 / NS_PER_S);
                    self.bps = self.bps.min(rate * UTILISATION);
                }
                self.last_cut_ns = Some(now_ns);
                self.cuts += 1;
            }
        } else if !holding {
            if probe && sample * UTILISATION > self.bps {
                // Halfway (geometrically) to what it measured: a probe not much bigger than
                // the link's burst allowance reads high, and the next keyframe can go on.
                self.bps = (self.bps * sample * UTILISATION).sqrt().min(self.bps * PROBE_MAX_RISE);
            }
            let dt = self.last_rise_ns.map_or(0.0, |t| now_ns.saturating_sub(t) as f64 / NS_PER_S);
            let fresh = unit.delivery_ns < target_age_ns / 2;
            if fresh && unit.sent_bps >= unit.encoder_bps * BUSY_SHARE {
                self.bps *= RISE_PER_S.powf(dt.min(1.0));
            }
        }
        self.last_rise_ns = Some(now_ns);
        // Never above what a big unit lately measured: delta frames cannot tell.
        if let Some(best) = self.probes.iter().map(|&(_, s)| s).reduce(f64::max) {
            self.bps = self.bps.min(best * UTILISATION);
        }
        self.bps = self.bps.clamp(self.min_bps, self.max_bps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link of `bps` that lets `burst` bytes through at once (a shaper's bucket), fed a
    /// 30 fps stream whose units are the rate's share of a second, every `gop`th a keyframe
    /// of five; at most two units in flight. Returns the mean rate over the last 10 s and the
    /// worst delivery of the last second, ms.
    fn run(rate: &mut StreamRate, bps: f64, burst: f64, seconds: u64) -> (f64, f64) {
        run_from(rate, bps, burst, 0, seconds)
    }

    /// [`run`] from `from_s` seconds on (to go on with a rate from an earlier run).
    fn run_from(rate: &mut StreamRate, bps: f64, burst: f64, from_s: u64, seconds: u64) -> (f64, f64) {
        let mut rates = Vec::new();
        let period = 33_333_333u64;
        let origin = from_s * 1_000_000_000;
        let (mut tokens, mut last) = (burst, origin);
        let mut link_free = origin;
        let mut in_flight: VecDeque<(u64, usize, bool, u64)> = VecDeque::new(); // sent, bytes, key, arrives
        let mut last_credit = origin;
        let mut sent: VecDeque<(u64, usize)> = VecDeque::new();
        let mut worst = 0.0f64;
        for k in 0..seconds * 30 {
            let now = origin + k * period;
            while let Some(&(sent_ns, bytes, key, at)) = in_flight.front() {
                if at > now {
                    break;
                }
                in_flight.pop_front();
                let busy = at - sent_ns.max(last_credit);
                last_credit = at;
                while sent.front().is_some_and(|&(t, _)| at - t > 1_000_000_000) {
                    sent.pop_front();
                }
                let sent_bps = sent.iter().map(|&(_, b)| b as f64 * 8.0).sum::<f64>();
                let unit = Delivery {
                    bytes,
                    delivery_ns: at - sent_ns,
                    busy_ns: busy,
                    keyframe: key,
                    sent_bps,
                    encoder_bps: rate.bps(),
                };
                rate.delivered(unit, 40_000_000, at);
                if now + 1_000_000_000 >= origin + seconds * 30 * period {
                    worst = worst.max((at - sent_ns) as f64 / 1e6);
                }
            }
            if now + 10_000_000_000 >= origin + seconds * 30 * period {
                rates.push(rate.bps());
            }
            if in_flight.len() >= 2 {
                continue;
            }
            let key = k % 60 == 0;
            let bytes = (rate.bps() / 8.0 / 30.0 * if key { 5.0 } else { 1.0 }) as usize;
            // The shaper: a bucket of `burst` bytes refilled at `bps`.
            let start = link_free.max(now);
            tokens = (tokens + (start - last) as f64 / 1e9 * bps / 8.0).min(burst);
            last = start;
            let over = (bytes as f64 - tokens).max(0.0);
            tokens = (tokens - bytes as f64).max(0.0);
            let done = start + (over * 8.0 / bps * 1e9) as u64 + 200_000;
            link_free = done;
            in_flight.push_back((now, bytes, key, done));
            sent.push_back((now, bytes));
        }
        (rates.iter().sum::<f64>() / rates.len().max(1) as f64, worst)
    }

    #[test]
    fn the_rate_settles_below_the_link_and_frames_stay_fresh() {
        for link in [1e6, 2e6, 8e6] {
            let mut rate = StreamRate::new(250e3, 6e6);
            let (bps, worst) = run(&mut rate, link, 3000.0, 30);
            assert!(bps < link * 0.95, "{link}: settled at {bps}");
            assert!(bps > link.min(6e6) * 0.45, "{link}: settled at {bps}, far below the link");
            assert!(worst < 200.0, "{link}: a unit took {worst} ms");
        }
    }

    #[test]
    fn a_burst_allowance_does_not_fool_it() {
        // Delta frames fit the bucket and pass at once; the keyframes tell the truth.
        let mut rate = StreamRate::new(250e3, 6e6);
        let (bps, worst) = run(&mut rate, 1e6, 5_000.0, 30);
        assert!(worst < 200.0, "a unit took {worst} ms");
        assert!(bps < 1e6, "{bps}");
    }

    #[test]
    fn a_slower_link_is_believed_at_once() {
        let mut rate = StreamRate::new(250e3, 6e6);
        run(&mut rate, 8e6, 3000.0, 20);
        assert!(rate.bps() > 3e6, "{}", rate.bps());
        let (cuts, before) = (rate.cuts, rate.bps());
        // One unit that queued for 300 ms.
        let unit = Delivery {
            bytes: 20_000,
            delivery_ns: 300_000_000,
            busy_ns: 160_000_000,
            keyframe: false,
            sent_bps: 4e6,
            encoder_bps: 4e6,
        };
        rate.delivered(unit, 40_000_000, 21_000_000_000);
        assert!(rate.bps() <= before * CUT + 1.0, "{} after {before}", rate.bps());
        assert_eq!(rate.cuts, cuts + 1);
    }

    #[test]
    fn a_step_down_is_followed_within_a_second() {
        let mut rate = StreamRate::new(250e3, 6e6);
        run(&mut rate, 20e6, 3000.0, 20);
        assert!(rate.bps() > 5e6, "{}", rate.bps());
        let cuts = rate.cuts;
        run_from(&mut rate, 2e6, 3000.0, 20, 1);
        assert!(rate.bps() < 2e6, "a second after 20 -> 2 Mbit/s: {}", rate.bps());
        assert!(rate.cuts - cuts <= 3, "{} cuts", rate.cuts - cuts);
        let (_, worst) = run_from(&mut rate, 2e6, 3000.0, 21, 5);
        assert!(worst < 200.0, "still late after 5 s: {worst} ms");
    }

    #[test]
    fn a_still_scene_does_not_raise_it() {
        let mut rate = StreamRate::new(250e3, 6e6);
        let start = rate.bps();
        for k in 1..300u64 {
            let unit = Delivery {
                bytes: 200,
                delivery_ns: 1_000_000,
                busy_ns: 1_000_000,
                keyframe: false,
                sent_bps: 50e3,
                encoder_bps: 1e6,
            };
            rate.delivered(unit, 40_000_000, k * 33_333_333);
        }
        assert_eq!(rate.bps(), start);
    }
}
