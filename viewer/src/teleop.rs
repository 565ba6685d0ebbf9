//! Who drives from this viewer: one browser at a time holds control ("take control"), the
//! others watch and see who drives. Only the holder's `drive` messages go to the vehicle, at
//! most [`DRIVE_RATE_HZ`] per browser; the vehicle's lease does the rest (a closed tab, a
//! dropped link or a released key stop the car within the lease). Pure logic; the hub holds
//! one [`Control`] and each websocket a [`DriveRate`].

use std::time::{Duration, Instant};

/// Drive messages a browser may send per second (pages send 25); beyond, they are dropped.
pub const DRIVE_RATE_HZ: f64 = 50.0;

/// The browser holding control, if any.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Control {
    holder: Option<Holder>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    client: u64,
    label: String,
}

/// What a change of control is for the pages: who holds it now (`None`: nobody).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ControlView {
    pub client: Option<u64>,
    pub label: Option<String>,
}

impl Control {
    /// `client` takes control (from whoever held it: the button is the deliberate act).
    /// Returns the new view if it changed.
    pub fn take(&mut self, client: u64, label: &str) -> Option<ControlView> {
        if self.holder.as_ref().is_some_and(|h| h.client == client) {
            return None;
        }
        self.holder = Some(Holder { client, label: label.to_string() });
        Some(self.view())
    }

    /// `client` lets go (the button, or its websocket closed); the view if that changed.
    pub fn release(&mut self, client: u64) -> Option<ControlView> {
        if self.holder.as_ref().is_some_and(|h| h.client == client) {
            self.holder = None;
            return Some(self.view());
        }
        None
    }

    pub fn holds(&self, client: u64) -> bool {
        self.holder.as_ref().is_some_and(|h| h.client == client)
    }

    pub fn view(&self) -> ControlView {
        ControlView {
            client: self.holder.as_ref().map(|h| h.client),
            label: self.holder.as_ref().map(|h| h.label.clone()),
        }
    }
}

/// A browser's drive messages, rate-limited on their own (they come at 25 Hz, above the
/// general per-client limit), so a page cannot flood the vehicle's action socket by driving.
#[derive(Debug)]
pub struct DriveRate {
    min_gap: Duration,
    last: Option<Instant>,
    /// The last message let through moved the car: the next release may not be dropped.
    moving: bool,
    pub dropped: u64,
}

impl Default for DriveRate {
    fn default() -> Self {
        Self { min_gap: Duration::from_secs_f64(1.0 / DRIVE_RATE_HZ), last: None, moving: false, dropped: 0 }
    }
}

impl DriveRate {
    /// Whether a drive message at `now` goes on. The release after moving (zero throttle and
    /// steering) always does: letting go must never be the message that is dropped; releases
    /// after that are limited like the rest, so zeros cannot flood the vehicle either.
    pub fn allow(&mut self, now: Instant, releasing: bool) -> bool {
        let first_release = releasing && self.moving;
        if !first_release && self.last.is_some_and(|t| now.saturating_duration_since(t) < self.min_gap) {
            self.dropped += 1;
            return false;
        }
        self.last = Some(now);
        self.moving = !releasing;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_browser_holds_control_until_another_takes_it_or_it_leaves() {
        let mut c = Control::default();
        assert!(!c.holds(1));
        let view = c.take(1, "browser 1").unwrap();
        assert_eq!((view.client, view.label.as_deref()), (Some(1), Some("browser 1")));
        assert!(c.holds(1) && !c.holds(2));
        assert_eq!(c.take(1, "browser 1"), None, "no change, no news");
        assert_eq!(c.release(2), None, "only the holder can let go");
        c.take(2, "browser 2");
        assert!(c.holds(2) && !c.holds(1), "taken over with the button");
        assert_eq!(c.release(2).unwrap().client, None);
        assert!(!c.holds(2));
    }

    #[test]
    fn drive_messages_are_rate_limited_but_a_release_always_passes() {
        let mut rate = DriveRate::default();
        let t0 = Instant::now();
        assert!(rate.allow(t0, false));
        assert!(!rate.allow(t0 + Duration::from_millis(5), false));
        assert!(rate.allow(t0 + Duration::from_millis(6), true), "letting go is never dropped");
        assert!(!rate.allow(t0 + Duration::from_millis(7), true), "a flood of releases is limited");
        assert!(rate.allow(t0 + Duration::from_millis(30), false));
        assert_eq!(rate.dropped, 2);
    }
}
