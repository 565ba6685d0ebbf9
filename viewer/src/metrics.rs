//! Counters and latency histograms, rendered as Prometheus text for `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, milliseconds.
const BUCKETS_MS: [f64; 12] = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 1000.0];

/// A cumulative histogram of latencies, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe_ms(&self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        if let Some(i) = BUCKETS_MS.iter().position(|&b| ms <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((ms * 1000.0) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS_MS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", bound / 1000.0);
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub frames_received: AtomicU64,
    /// Frames the vehicle did not send us (gaps in frame ids), by its own account or ours.
    pub frames_missed: AtomicU64,
    /// Frames a browser did not get because it was slower than the stream (newest wins).
    pub frames_dropped_clients: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_malformed: AtomicU64,
    pub events_dropped_clients: AtomicU64,
    pub actions_sent: AtomicU64,
    /// Teleop `drive` commands sent (never acknowledged one by one).
    pub drives_sent: AtomicU64,
    pub actions_accepted: AtomicU64,
    pub actions_rejected: AtomicU64,
    pub actions_unanswered: AtomicU64,
    /// States not shown: older than one shown, or a backlog after an outage.
    pub states_discarded: AtomicU64,
    /// Sends of an action again (same id) because no acknowledgement had come yet.
    pub actions_retransmitted: AtomicU64,
    /// HTTP connections closed on accept because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// HTTP requests refused by the web guard (foreign Host, cross-origin, wrong content type).
    pub requests_refused: AtomicU64,
    pub link_losses: AtomicU64,
    /// H.264 access units decoded, dropped as corrupt, dropped while waiting for a keyframe;
    /// keyframes asked of the vehicle.
    pub h264_decoded: AtomicU64,
    pub h264_corrupt: AtomicU64,
    pub h264_waiting: AtomicU64,
    pub h264_key_requests: AtomicU64,
    pub clients: AtomicU64,
    pub mjpeg_clients: AtomicU64,
    /// Capture on the vehicle → received here (ZeroMQ over the network).
    pub vehicle_to_viewer: Histogram,
    /// Received here → painted in a browser, as the browser reports it.
    pub viewer_to_browser: Histogram,
    /// Capture → painted in a browser.
    pub capture_to_browser: Histogram,
}

impl Metrics {
    pub fn render(&self, link_up: bool) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, &AtomicU64); 21] = [
            ("ads_viewer_frames_received_total", "Frames received from the vehicle.", &self.frames_received),
            (
                "ads_viewer_frames_missed_total",
                "Frame ids skipped in the vehicle's stream.",
                &self.frames_missed,
            ),
            (
                "ads_viewer_frames_dropped_total",
                "Frames not sent to a browser because it was still busy with an older one.",
                &self.frames_dropped_clients,
            ),
            (
                "ads_viewer_messages_received_total",
                "Messages received from the vehicle.",
                &self.messages_received,
            ),
            (
                "ads_viewer_messages_malformed_total",
                "Messages that failed to decode.",
                &self.messages_malformed,
            ),
            (
                "ads_viewer_events_dropped_total",
                "Telemetry/event messages a slow browser missed.",
                &self.events_dropped_clients,
            ),
            ("ads_viewer_actions_sent_total", "Actions sent to the vehicle.", &self.actions_sent),
            ("ads_viewer_drives_sent_total", "Teleop drive commands sent to the vehicle.", &self.drives_sent),
            ("ads_viewer_actions_accepted_total", "Actions the vehicle accepted.", &self.actions_accepted),
            ("ads_viewer_actions_rejected_total", "Actions the vehicle rejected.", &self.actions_rejected),
            (
                "ads_viewer_actions_unanswered_total",
                "Actions with no acknowledgement in time.",
                &self.actions_unanswered,
            ),
            (
                "ads_viewer_states_discarded_total",
                "States not shown: older than one shown, or queued during an outage.",
                &self.states_discarded,
            ),
            (
                "ads_viewer_actions_retransmitted_total",
                "Actions sent again (same id) while unanswered.",
                &self.actions_retransmitted,
            ),
            (
                "ads_viewer_connections_refused_total",
                "HTTP connections closed because too many were open.",
                &self.connections_refused,
            ),
            (
                "ads_viewer_requests_refused_total",
                "HTTP requests refused: foreign Host, cross-origin, not JSON.",
                &self.requests_refused,
            ),
            ("ads_viewer_link_losses_total", "Times the vehicle went silent.", &self.link_losses),
            ("ads_viewer_h264_decoded_total", "H.264 access units decoded.", &self.h264_decoded),
            ("ads_viewer_h264_corrupt_total", "H.264 access units dropped as corrupt.", &self.h264_corrupt),
            (
                "ads_viewer_h264_waiting_total",
                "H.264 access units dropped until a keyframe.",
                &self.h264_waiting,
            ),
            (
                "ads_viewer_h264_key_requests_total",
                "Keyframes asked of the vehicle.",
                &self.h264_key_requests,
            ),
            (
                "ads_viewer_h264_jpeg_encodes_total",
                "JPEGs made from decoded H.264 pictures (only for frames someone wanted as JPEG).",
                &crate::packet::JPEG_ENCODES,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            ("ads_viewer_clients", "Browsers connected by websocket.", self.clients.load(Ordering::Relaxed)),
            (
                "ads_viewer_mjpeg_clients",
                "Clients of /stream.mjpg.",
                self.mjpeg_clients.load(Ordering::Relaxed),
            ),
            ("ads_viewer_vehicle_link_up", "1 while the vehicle is heard from.", u64::from(link_up)),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        self.vehicle_to_viewer.render(
            &mut out,
            "ads_viewer_vehicle_to_viewer_seconds",
            "Frame capture on the vehicle to reception here.",
        );
        self.viewer_to_browser.render(
            &mut out,
            "ads_viewer_viewer_to_browser_seconds",
            "Frame reception here to painted in a browser.",
        );
        self.capture_to_browser.render(
            &mut out,
            "ads_viewer_capture_to_browser_seconds",
            "Frame capture on the vehicle to painted in a browser.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_out_of_range_values_are_ignored() {
        let m = Metrics::default();
        for ms in [0.5, 3.0, 3.0, 5000.0, f64::NAN, -1.0] {
            m.vehicle_to_viewer.observe_ms(ms);
        }
        let text = m.render(true);
        assert!(text.contains("ads_viewer_vehicle_to_viewer_seconds_bucket{le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("ads_viewer_vehicle_to_viewer_seconds_bucket{le=\"0.005\"} 3\n"));
        assert!(text.contains("ads_viewer_vehicle_to_viewer_seconds_bucket{le=\"1\"} 3\n"));
        assert!(text.contains("ads_viewer_vehicle_to_viewer_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("ads_viewer_vehicle_to_viewer_seconds_count 4\n"));
        assert!(text.contains("ads_viewer_vehicle_link_up 1\n"));
    }
}
