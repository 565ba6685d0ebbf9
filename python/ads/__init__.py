"""The Python SDK of the ads vehicle pipeline.

- :class:`FrameReader` attaches to a frame ring (``ads-vehicle``'s ``frames``) and hands out
  each frame as a numpy array (H x W x 3 uint8, BGR), zero-copy, or copied out.
- :class:`DetectionsWriter` writes detection records into a ``detections`` ring exactly as
  ``ads-detection`` does, so ``ads-vehicle`` steers from a Python detector unchanged.
- :mod:`ads.client` decodes the vehicle's ZeroMQ topics and sends signed actions.

The ring layout, the record encoding and the protocol are the Rust crates' (``ads._native``
wraps ``ads-shmem-ipc`` and ``ads-protocol``); nothing here re-implements them.

Zero-copy and validity
----------------------
A :class:`Frame`'s ``pixels`` is a read-only view of the frame in shared memory. Until the
frame is finished (:meth:`Frame.finish`, the end of its ``with`` block, the next ``read``),
it pins its slot and the ring's writer never writes that slot, so ``pixels`` stays one frame;
``frame.valid`` reports the ring's seqlock check as a second line of defence. After that the
array may show a newer frame's bytes: finish promptly (a held frame costs the writer a slot)
and copy what you keep. The view itself is always safe to touch: it is a read-only ``mmap`` that stays mapped for
as long as any array uses it. Use :meth:`FrameReader.read_copy` for an array that is yours to
keep.
"""

from __future__ import annotations

import mmap
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import _native
from ._native import (
    DETECTIONS_RING,
    FRAMES_RING,
    PROTOCOL_VERSION,
    LayoutMismatch,
    Overwritten,
    ProtocolError,
    RingCorrupt,
    RingInitialising,
    RingError,
    RingNotFound,
    WriterAlive,
    WriterGone,
    monotonic_ns,
    wall_ns,
)

__all__ = [
    "DETECTIONS_RING",
    "FRAMES_RING",
    "PROTOCOL_VERSION",
    "CopiedFrame",
    "DetectedObject",
    "DetectionsWriter",
    "Frame",
    "FrameReader",
    "Lanes",
    "LayoutMismatch",
    "Overwritten",
    "ProtocolError",
    "RingCorrupt",
    "RingInitialising",
    "RingError",
    "RingNotFound",
    "WriterAlive",
    "WriterGone",
    "monotonic_ns",
    "wall_ns",
]


class _SegmentView:
    """A read-only mapping of the ring's file, the memory every zero-copy array views.

    It is the very file (device and inode) the Rust reader mapped, or an error: a ring
    replaced by a restarted writer is a new file.
    """

    def __init__(self, path: str, major: int, minor: int, inode: int) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # The kernel names an unlinked file "<path> (deleted)": the writer is gone.
            raise WriterGone(f"ring file {path} was removed (its writer exited or restarted): attach again") from None
        try:
            st = os.fstat(fd)
            if (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) != (major, minor, inode):
                raise WriterGone(f"ring file {path} was replaced (its writer restarted): attach again")
            self.map = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        self._views: Dict[int, np.ndarray] = {}

    def view(self, offset: int, shape: Tuple[int, ...], strides: Tuple[int, ...]) -> np.ndarray:
        # One array per slot: they view the same bytes every time that slot comes round.
        array = self._views.get(offset)
        if array is None:
            array = np.ndarray(shape, dtype=np.uint8, buffer=self.map, offset=offset, strides=strides)
            self._views[offset] = array
        return array


class Frame:
    """One frame lent by a :class:`FrameReader`.

    ``pixels`` is valid until the frame is finished: by :meth:`finish`, by leaving its ``with``
    block, by reading the next frame from the same reader, or when the frame is
    garbage-collected. ``valid`` then says whether what was read was one intact frame.
    """

    __slots__ = ("_native", "_reader")

    def __init__(self, native: _native.Frame, reader: "FrameReader") -> None:
        self._native = native
        self._reader = reader

    @property
    def pixels(self) -> np.ndarray:
        """The frame in place: a read-only uint8 array (H x W x channels, BGR for bgr8)."""
        return self._reader._view(self._native.offset)

    @property
    def id(self) -> int:
        """The writer's frame id (the simulator's or camera's frame number)."""
        return self._native.id

    @property
    def seq(self) -> int:
        return self._native.seq

    @property
    def capture_mono_ns(self) -> int:
        return self._native.capture_mono_ns

    @property
    def capture_wall_ns(self) -> int:
        return self._native.capture_wall_ns

    @property
    def publish_mono_ns(self) -> int:
        return self._native.publish_mono_ns

    @property
    def read_mono_ns(self) -> int:
        """When this reader took the frame from the ring (CLOCK_MONOTONIC ns)."""
        return self._native.read_mono_ns

    @property
    def valid(self) -> Optional[bool]:
        """None while the frame is lent; afterwards whether it was intact."""
        return self._native.finished

    def is_intact(self) -> bool:
        """True if the writer has not touched the frame yet."""
        return self._native.is_intact()

    def finish(self) -> bool:
        """Ends the read. True if everything read from ``pixels`` was one frame."""
        return self._native.finish()

    def copy(self) -> np.ndarray:
        """A copy of the pixels (check :meth:`finish` before trusting it)."""
        return self.pixels.copy()

    def __enter__(self) -> "Frame":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._native.finish()

    def __repr__(self) -> str:
        return f"Frame(id={self.id}, seq={self.seq}, valid={self.valid})"


@dataclass(frozen=True)
class CopiedFrame:
    """A frame copied out of the ring, known to be intact: the array is yours."""

    pixels: np.ndarray = field(repr=False)
    id: int
    seq: int
    capture_mono_ns: int
    capture_wall_ns: int
    publish_mono_ns: int
    read_mono_ns: int


class FrameReader:
    """A reading end of a frame ring.

    >>> reader = ads.FrameReader("frames")             # doctest: +SKIP
    >>> with reader.read(timeout=1.0) as frame:        # doctest: +SKIP
    ...     mean = frame.pixels.mean()
    >>> frame.valid                                    # doctest: +SKIP
    True

    ``mode`` is "latest" (skip to the newest frame) or "in_order" (every frame, lapped ones
    counted as dropped). With ``width`` and ``height`` the ring must have that geometry, or
    :class:`LayoutMismatch` names both. :class:`RingNotFound` if no such ring exists,
    :class:`WriterGone` once its writer closed it or died (attach again to follow a restart).
    """

    def __init__(
        self,
        name: str = FRAMES_RING,
        *,
        mode: str = "latest",
        width: Optional[int] = None,
        height: Optional[int] = None,
        format: str = "bgr8",
    ) -> None:
        self._native = _native.FrameReader(name, mode, width, height, format)
        self._segment: Optional[_SegmentView] = None
        channels = self._native.channels
        h, w, stride = self._native.height, self._native.width, self._native.stride
        if channels == 1:
            self._shape: Tuple[int, ...] = (h, w)
            self._strides: Tuple[int, ...] = (stride, 1)
        else:
            self._shape = (h, w, channels)
            self._strides = (stride, channels, 1)

    @classmethod
    def wait_for(cls, name: str = FRAMES_RING, timeout: Optional[float] = None, **options: Any) -> "FrameReader":
        """Attaches as soon as ring ``name`` exists with a live writer."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return cls(name, **options)
            except (RingNotFound, WriterGone):
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def read(self, timeout: Optional[float] = 1.0, *, spin: bool = False) -> Optional[Frame]:
        """The next frame, zero-copy; None if none came within ``timeout`` seconds (None:
        wait forever, 0: just look). Waits with the GIL released; ``spin`` busy-polls."""
        native = self._native.read(timeout, spin)
        if native is None:
            return None
        return Frame(native, self)

    def read_copy(self, timeout: Optional[float] = 1.0, *, spin: bool = False) -> Optional[CopiedFrame]:
        """The next frame that was still intact after being copied out (overwritten copies
        are retried within ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            frame = self.read(left, spin=spin)
            if frame is None:
                return None
            pixels = frame.pixels.copy()
            if frame.finish():
                n = frame._native
                return CopiedFrame(
                    pixels, n.id, n.seq, n.capture_mono_ns, n.capture_wall_ns, n.publish_mono_ns, n.read_mono_ns
                )
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _view(self, offset: int) -> np.ndarray:
        if self._segment is None:
            located = self._native.segment_file()
            if located is None:
                raise RuntimeError("no frame has been read yet")
            self._segment = _SegmentView(*located)
        return self._segment.view(offset, self._shape, self._strides)

    @property
    def name(self) -> str:
        return self._native.name

    @property
    def mode(self) -> str:
        return self._native.mode

    @property
    def width(self) -> int:
        return self._native.width

    @property
    def height(self) -> int:
        return self._native.height

    @property
    def stride(self) -> int:
        return self._native.stride

    @property
    def format(self) -> str:
        return self._native.format

    @property
    def shape(self) -> Tuple[int, ...]:
        """The shape of every frame's array."""
        return self._shape

    @property
    def writer_pid(self) -> int:
        return self._native.writer_pid

    @property
    def generation(self) -> int:
        """How often a writer took this ring over from a dead one."""
        return self._native.generation

    def stats(self) -> Dict[str, int]:
        """read, skipped (latest mode), dropped (in-order mode), overruns (overwritten while read)."""
        return self._native.stats()

    def close(self) -> None:
        """Finishes a lent frame and detaches. Arrays already handed out stay readable."""
        self._native.close()

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _xs(values: Any) -> List[Optional[float]]:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    return [None if v is None else float(v) for v in values]


@dataclass
class Lanes:
    """The lanes of one frame, TuSimple style (see docs/protocol.md, ``LaneDetection``).

    ``left[i]``/``right[i]`` is the column of the line at image row ``h_samples[i]``, None
    where it is not visible (NaN is refused, so a bug is not sent as a lane). The pose is what
    the vehicle steers by: ``lateral_offset_m`` (+ = car left of the lane centre),
    ``heading_error_rad`` (+ = car pointing left of the lane), ``curvature_radius_m``
    (+ = lane curving left, None when straight), at the car's rear axle.
    """

    h_samples: Sequence[int]
    left: Sequence[Optional[float]]
    right: Sequence[Optional[float]]
    left_confidence: float
    right_confidence: float
    lateral_offset_m: float
    heading_error_rad: float
    curvature_radius_m: Optional[float] = None

    def _record(self) -> Dict[str, Any]:
        rows = self.h_samples.tolist() if isinstance(self.h_samples, np.ndarray) else list(self.h_samples)
        return {
            "h_samples": [int(r) for r in rows],
            "left": _xs(self.left),
            "right": _xs(self.right),
            "left_confidence": float(self.left_confidence),
            "right_confidence": float(self.right_confidence),
            "lateral_offset_m": float(self.lateral_offset_m),
            "heading_error_rad": float(self.heading_error_rad),
            "curvature_radius_m": None if self.curvature_radius_m is None else float(self.curvature_radius_m),
        }


@dataclass
class DetectedObject:
    """An object's box in pixels of the source frame (COCO class names)."""

    class_name: str
    class_id: int
    score: float
    x_px: float
    y_px: float
    w_px: float
    h_px: float

    def _record(self) -> Dict[str, Any]:
        return {
            "class": self.class_name,
            "class_id": int(self.class_id),
            "score": float(self.score),
            "x_px": float(self.x_px),
            "y_px": float(self.y_px),
            "w_px": float(self.w_px),
            "h_px": float(self.h_px),
        }


class DetectionsWriter:
    """The writing end of a detections ring, as ``ads-detection`` creates it.

    One per ring name (:class:`WriterAlive` otherwise); a ring left by a dead detector is
    taken over. Closing (or the process exiting) removes the ring, and the vehicle falls back
    to its fail-safe until a detector writes again.
    """

    def __init__(self, name: str = DETECTIONS_RING, *, detector: str = "py") -> None:
        self._native = _native.DetectionsWriter(name)
        self.detector = detector

    @property
    def name(self) -> str:
        return self._native.name

    def publish(
        self,
        frame: Any,
        lanes: Optional[Lanes] = None,
        objects: Iterable[DetectedObject] = (),
        *,
        processing_us: Optional[int] = None,
    ) -> int:
        """Publishes the results for ``frame`` (a :class:`Frame` or :class:`CopiedFrame`,
        whose id and capture times the record carries). ``processing_us`` defaults to the
        time since the frame was read. Raises ValueError (naming the field) for a NaN, a
        length mismatch or an out-of-range value, and publishes nothing then."""
        now = monotonic_ns()
        if processing_us is None:
            processing_us = max(0, (now - frame.read_mono_ns) // 1000)
        read_wall = wall_ns() - (now - frame.read_mono_ns)
        return self._native.publish(
            frame_id=frame.id,
            capture_mono_ns=frame.capture_mono_ns,
            capture_wall_ns=frame.capture_wall_ns,
            read_ns=read_wall,
            processing_us=int(processing_us),
            detector=self.detector,
            lanes=None if lanes is None else lanes._record(),
            objects=[o._record() for o in objects],
        )

    def heartbeat(self) -> None:
        """Says the detector is alive while it has no frame to answer."""
        self._native.heartbeat()

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> "DetectionsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
