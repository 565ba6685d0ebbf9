#!/usr/bin/env python3
"""A lane detector in pure numpy that drives the simulator's car through the ads SDK.

It reads frames from the vehicle's frame ring zero-copy, finds the white lane markings of the
car's lane, fits each line on the ground plane (the simulator's pinhole camera, flat road),
and writes the lane pose the vehicle steers by into the detections ring, exactly as
``ads-detection`` would:

    ads-vehicle --control detections --frames-ring frames --detections-ring detections &
    python python/examples/lane_detector.py --frames-ring frames --detections-ring detections

It follows the vehicle through restarts, discards results computed from a frame the vehicle
overwrote while it was read, and exits cleanly (removing its ring) on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from typing import List, Optional, Tuple

import numpy as np

import ads

# The simulator's camera (ads_sim::CameraConfig::default()).
CAMERA_HEIGHT_M = 1.3
CAMERA_PITCH_RAD = 0.146
CAMERA_HFOV_RAD = math.radians(80.0)
# The camera is this far ahead of the rear axle, where the vehicle wants the lane pose.
CAMERA_AHEAD_OF_AXLE_M = 1.5
LANE_WIDTH_M = 3.5
# Ground seen: from just ahead of the bonnet to where rows get coarse.
NEAR_M, FAR_M = 2.0, 28.0
# A marking pixel: bright in every channel (white paint, not yellow paint or the shoulder).
WHITE_MIN = 165
WHITE_SPREAD = 45
# A candidate farther than this from where the line was predicted is not that line.
GATE_M = 0.9
# The two lines' directions may differ this much (a lane's width changes little).
MAX_SLOPE_DIFFERENCE = 0.08
# How far ahead lines are looked for when there is no previous frame to go by.
ACQUIRE_M = 6.0


class Camera:
    """The pinhole camera over flat ground, pitched, not rolled (pixel centres at integers)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.focal = width / 2.0 / math.tan(CAMERA_HFOV_RAD / 2.0)
        self.cx, self.cy = (width - 1) / 2.0, (height - 1) / 2.0
        self.sin_p, self.cos_p = math.sin(CAMERA_PITCH_RAD), math.cos(CAMERA_PITCH_RAD)
        self.horizon = self.cy - self.focal * math.tan(CAMERA_PITCH_RAD)

    def forward_of_row(self, v: np.ndarray) -> np.ndarray:
        """Ground distance ahead of the camera seen by image row ``v`` (below the horizon)."""
        t = (v - self.cy) / self.focal
        return CAMERA_HEIGHT_M * (self.cos_p - t * self.sin_p) / (self.sin_p + t * self.cos_p)

    def depth(self, forward: np.ndarray) -> np.ndarray:
        return forward * self.cos_p + CAMERA_HEIGHT_M * self.sin_p

    def column(self, right_m: np.ndarray, forward: np.ndarray) -> np.ndarray:
        return self.cx + self.focal * right_m / self.depth(forward)


class LaneDetector:
    """Finds the two lines of the car's lane and their pose on the ground."""

    def __init__(self, width: int, height: int) -> None:
        self.camera = Camera(width, height)
        rows = np.arange(int(self.camera.horizon) + 2, height, 3)
        forward = self.camera.forward_of_row(rows.astype(np.float64))
        keep = (forward >= NEAR_M) & (forward <= FAR_M)
        self.rows, self.forward = rows[keep], forward[keep]
        # Metres to the right per pixel to the right, per scan row.
        self.m_per_px = self.camera.depth(self.forward) / self.camera.focal
        first = int(math.ceil((self.camera.horizon + 3.0) / 10.0)) * 10
        self.h_samples = np.arange(max(first, 0), height, 10)
        self.reset()

    def reset(self) -> None:
        """Forgets the previous lines (a new or restarted vehicle is a new scene)."""
        self.fits: Optional[List[np.ndarray]] = None

    @staticmethod
    def acquire(right_m: np.ndarray, forward: np.ndarray) -> List[np.ndarray]:
        """Where the lines are with no previous frame to go by: the nearest marking on each
        side of the car just ahead of it (farther out, a heading error moves the lines across
        the car's axis), else a lane width from the other line."""
        near = right_m[(forward < ACQUIRE_M) & (np.abs(right_m) < LANE_WIDTH_M * 1.5)]
        counts, edges = np.histogram(near, bins=np.arange(-5.25, 5.26, 0.25))
        centres = (edges[:-1] + edges[1:]) / 2.0
        marked = centres[counts >= 4]
        left = marked[marked < 0].max(initial=-LANE_WIDTH_M / 2 - 9.0)
        right = marked[marked > 0].min(initial=LANE_WIDTH_M / 2 + 9.0)
        if left < -LANE_WIDTH_M:
            left = right - LANE_WIDTH_M if right <= LANE_WIDTH_M else -LANE_WIDTH_M / 2
        if right > LANE_WIDTH_M:
            right = left + LANE_WIDTH_M
        return [np.array([0.0, 0.0, left]), np.array([0.0, 0.0, right])]

    def detect(self, bgr: np.ndarray) -> Optional[ads.Lanes]:
        strip = bgr[self.rows].astype(np.int16)
        lo, hi = strip.min(axis=2), strip.max(axis=2)
        mask = (lo >= WHITE_MIN) & (hi - lo <= WHITE_SPREAD)
        row_idx, cols = np.nonzero(mask)
        if row_idx.size == 0:
            return None
        right_m = (cols - self.camera.cx) * self.m_per_px[row_idx]
        forward = self.forward[row_idx]
        found: List[Optional[np.ndarray]] = []
        confidence: List[float] = []
        support: List[int] = []
        previous = self.fits if self.fits is not None else self.acquire(right_m, forward)
        for side, fit in enumerate(previous):
            predicted = np.polyval(fit, forward)
            near = np.abs(right_m - predicted) <= GATE_M
            near &= (right_m < 0.3) if side == 0 else (right_m > -0.3)
            rows_hit = np.unique(row_idx[near])
            support.append(rows_hit.size)
            confidence.append(min(1.0, rows_hit.size / (0.35 * self.rows.size)))
            if rows_hit.size < 6:
                found.append(None)
                continue
            z, x = forward[near], right_m[near]
            degree = 2 if np.ptp(z) > 10.0 else 1
            coeffs = np.polyfit(z, x, degree)
            found.append(np.concatenate([np.zeros(3 - coeffs.size), coeffs]))
        left, right = found
        if left is None and right is None:
            self.reset()
            return None
        if left is not None and right is not None:
            width = np.polyval(right - left, 5.0)
            turn = abs(np.polyval(np.polyder(right - left), 5.0))
            if not 0.6 * LANE_WIDTH_M <= width <= 1.5 * LANE_WIDTH_M or turn > MAX_SLOPE_DIFFERENCE:
                # The lines of one lane are parallel and a lane apart. Otherwise a fit took the
                # wrong marking (a large heading error sweeps a line across the car's axis):
                # keep the better supported one, on the side it is of the car.
                kept = 0 if support[0] >= support[1] else 1
                line = found[kept]
                left, right = (line, None) if np.polyval(line, NEAR_M) < 0 else (None, line)
                confidence = [confidence[kept]] * 2
        # One line seen: the other is a lane width away.
        shift = np.array([0.0, 0.0, LANE_WIDTH_M])
        if left is None:
            left = right - shift
        if right is None:
            right = left + shift
        self.fits = [left, right]
        centre = (left + right) / 2.0
        at = -CAMERA_AHEAD_OF_AXLE_M
        offset = float(np.polyval(centre, at))
        slope = float(np.polyval(np.polyder(centre), at))
        # The lane's curvature to the left (+) is minus the second derivative to the right.
        kappa = -2.0 * centre[0] / (1.0 + slope * slope) ** 1.5
        radius = None if abs(kappa) < 1e-4 else 1.0 / kappa
        return ads.Lanes(
            h_samples=self.h_samples,
            left=self._columns(left, confidence[0] > 0),
            right=self._columns(right, confidence[1] > 0),
            left_confidence=confidence[0],
            right_confidence=confidence[1],
            lateral_offset_m=offset,
            heading_error_rad=math.atan(slope),
            curvature_radius_m=radius,
        )

    def _columns(self, fit: np.ndarray, seen: bool) -> List[Optional[float]]:
        """The line's column at each TuSimple row, None where it is not in view."""
        forward = self.camera.forward_of_row(self.h_samples.astype(np.float64))
        u = self.camera.column(np.polyval(fit, forward), forward)
        visible = seen & (forward >= NEAR_M) & (forward <= FAR_M) & (u >= 0) & (u < self.camera.width)
        return [float(c) if ok else None for c, ok in zip(u, visible)]


def run(frames_ring: str, detections_ring: str, seconds: float) -> int:
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    processed = discarded = 0
    with ads.DetectionsWriter(detections_ring, detector="py-numpy") as writer:
        print(f"lane_detector: writing {detections_ring!r}, waiting for {frames_ring!r}", file=sys.stderr, flush=True)
        while not stop and (seconds <= 0 or time.monotonic() - started < seconds):
            try:
                reader = ads.FrameReader(frames_ring, mode="latest")
            except (ads.RingNotFound, ads.RingInitialising, ads.WriterGone):
                writer.heartbeat()
                time.sleep(0.05)
                continue
            detector = LaneDetector(reader.width, reader.height)
            while not stop and (seconds <= 0 or time.monotonic() - started < seconds):
                try:
                    frame = reader.read(timeout=0.1)
                except ads.WriterGone as gone:
                    print(f"lane_detector: {gone}; waiting for the vehicle", file=sys.stderr, flush=True)
                    break
                if frame is None:
                    writer.heartbeat()
                    continue
                with frame:
                    lanes = detector.detect(frame.pixels)
                if not frame.valid:
                    discarded += 1
                    continue
                writer.publish(frame, lanes)
                processed += 1
            reader.close()
    print(f"lane_detector: {processed} frames processed, {discarded} discarded", file=sys.stderr, flush=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-ring", default=ads.FRAMES_RING)
    parser.add_argument("--detections-ring", default=ads.DETECTIONS_RING)
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: run until SIGTERM)")
    args = parser.parse_args(argv)
    return run(args.frames_ring, args.detections_ring, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
