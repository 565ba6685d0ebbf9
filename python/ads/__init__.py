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
A :class:`Frame`'s ``pixels`` is a read-only numpy view of the frame in shared memory, and it
**keeps its frame pinned for as long as the array lives**: the ring's writer never writes a
pinned slot, so ``px = reader.read().pixels`` is one whole frame, unchanged, until ``px`` (and
every view of it) is gone. The array's ``base`` holds the pin. A :class:`Frame` holds it too,
until it is finished (:meth:`Frame.finish`, the end of its ``with`` block, the next ``read``
of its reader); ``frame.valid`` then reports the ring's sequence check, a second line of
defence. Each held frame costs the writer a slot, so let arrays go (or copy what you keep,
or use :meth:`FrameReader.read_copy`): a reader holds at most ``max_pins`` frames at once
(default 2: the frame in hand and the next one being read) and raises :class:`RingError`
rather than read one more. Each access of ``pixels`` is a new array.

The arrays view the ring's file through a read-only ``mmap`` of the reader's own descriptor,
so a frame held when the writer closes stays viewable, and the memory stays mapped for as
long as any array uses it.

Readers and ``fork()``
----------------------
A reader belongs to the process that attached it. In a child made by ``fork()`` (a
``multiprocessing`` worker started with fork, a PyTorch ``DataLoader`` worker) every reader
of the parent is closed at the fork and raises :class:`ForkedReader`: attach a new one in the
child. Arrays the child inherited show the parent's frames, pinned only while the parent
holds them: copy what a child needs before forking.
"""

from __future__ import annotations

import mmap
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import _native
from ._native import (
    DETECTIONS_RING,
    FRAMES_RING,
    PROTOCOL_VERSION,
    ForkedReader,
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
    "ForkedReader",
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


class _Pinned(np.ndarray):
    """The base of every array :attr:`Frame.pixels` hands out: it holds the frame's pin (a
    ``_native.Pin``), so the frame stays pinned for as long as any array or view of it lives."""

    pin: Any


class Frame:
    """One frame lent by a :class:`FrameReader`.

    The Frame holds its slot pinned until it is finished: by :meth:`finish`, by leaving its
    ``with`` block, by reading the next frame from the same reader, or when the frame is
    garbage-collected; arrays from ``pixels`` hold it for as long as they live. ``valid``
    then says whether what was read was one intact frame.
    """

    __slots__ = ("_native", "_reader")

    def __init__(self, native: _native.Frame, reader: "FrameReader") -> None:
        self._native = native
        self._reader = reader

    @property
    def pixels(self) -> np.ndarray:
        """The frame in place: a read-only uint8 array (H x W x channels, BGR for bgr8), a new
        one per access, that keeps the frame pinned while it lives. ValueError once the frame
        is finished (take arrays before finishing: they keep the frame)."""
        pin = self._native.pin()
        reader = self._reader
        holder = np.ndarray.__new__(
            _Pinned, reader._shape, np.uint8, reader._map, self._native.offset, reader._strides
        )
        holder.pin = pin
        return holder.view(np.ndarray)

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
        """Ends the Frame's hold. True if the frame was intact (one frame, never overwritten).
        Its arrays still alive keep it pinned until they go."""
        return self._native.finish()

    def copy(self) -> np.ndarray:
        """A copy of the pixels, which is yours to keep."""
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
    ``max_pins`` (1 to 8): how many frames the reader may hold at once, by Frames not yet
    finished and by arrays still alive; each may cost the ring's writer a slot.
    """

    def __init__(
        self,
        name: str = FRAMES_RING,
        *,
        mode: str = "latest",
        width: Optional[int] = None,
        height: Optional[int] = None,
        format: str = "bgr8",
        max_pins: int = 2,
    ) -> None:
        self._native = _native.FrameReader(name, mode, width, height, format, max_pins)
        self._pid = os.getpid()
        # The very file the reader attached, by its descriptor (mmap duplicates it): held
        # frames stay viewable after the writer closed and unlinked it.
        self._map = mmap.mmap(self._native.fileno(), 0, mmap.MAP_SHARED, mmap.PROT_READ)
        _live_readers.add(self)
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
            # Under the Frame's pin: no array (and no pin for it) needed to copy.
            pixels = np.ndarray(self._shape, np.uint8, self._map, frame._native.offset, self._strides).copy()
            if frame.finish():
                n = frame._native
                return CopiedFrame(
                    pixels, n.id, n.seq, n.capture_mono_ns, n.capture_wall_ns, n.publish_mono_ns, n.read_mono_ns
                )
            if deadline is not None and time.monotonic() >= deadline:
                return None

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

    @property
    def closed(self) -> bool:
        """True once closed, or in a forked child of the process that attached it."""
        return self._native.closed

    @property
    def max_pins(self) -> int:
        """How many frames the reader may hold at once (Frames not finished, arrays alive)."""
        return self._native.max_pins

    @property
    def pinned(self) -> int:
        """Frames held now, by Frames not finished and by arrays alive."""
        return self._native.pinned

    def stats(self) -> Dict[str, int]:
        """read, skipped (latest mode), dropped (in-order mode), overruns (overwritten while read)."""
        return self._native.stats()

    def close(self) -> None:
        """Stops reading: finishes the last frame; the reader detaches once the arrays still
        holding frames are gone (they stay pinned and readable until then)."""
        self._native.close()

    def __reduce_ex__(self, protocol: Any) -> Any:
        # multiprocessing (spawn, forkserver) pickles what it passes to a worker.
        raise TypeError(
            f"a FrameReader (ring {self.name!r}) belongs to the process that attached it and "
            "cannot be sent to another: pass the ring's name and attach a reader there"
        )

    def _forget_in_child(self) -> None:
        self._native.forget_in_child(
            f"the reader of ring {self.name!r} was attached in process {self._pid}, and this is "
            f"process {os.getpid()}, a fork of it: ads closed it at the fork; attach a new reader here"
        )

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_live_readers: "weakref.WeakSet[FrameReader]" = weakref.WeakSet()


def _forget_readers_in_child() -> None:
    # Runs in the child of every os.fork() (multiprocessing and DataLoader workers included):
    # the readers are the parent's; reading through them here would take its pins away.
    for reader in list(_live_readers):
        reader._forget_in_child()


os.register_at_fork(after_in_child=_forget_readers_in_child)


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
