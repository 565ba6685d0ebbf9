#!/usr/bin/env python3
"""Reads a recorded drive (an ``ads-record`` MCAP file) into numpy arrays, ready for training:

    images     N x H x W x 3  uint8   (RGB, the camera's JPEGs decoded)
    labels     N x 2          float64 ([steering, throttle] of each image)
    frame_ids  N              uint64

    python python/examples/drive_to_numpy.py drive.mcap --out drive.npz [--resize 160x120]

Each frame (``/camera/image`` with its ``/frame`` metadata, written right before it) is paired
with the ``/controls`` record of the same frame id; frames without one are skipped. The label is
chosen as ``ads-record export`` chooses it (docs/recording.md, "Drives as training data"): the
operator's command where the car drove on it (``manual``; ``assist``: the loop's steering at the
operator's throttle), else what the control loop commanded; ``--label commanded`` always takes
the latter. Conventions are ads': steering -1..1 with + = LEFT, throttle -1..1 with - = brake
(Donkey Car's angle is the other way round: negate the steering for a Donkey model).

Only the ``mcap`` package, numpy and Pillow: no ads SDK needed. For PyTorch, ``DriveDataset``
is a map-style dataset (``torch.utils.data.DataLoader(DriveDataset(drive), batch_size=64)``)
giving CHW float32 images in 0..1 and float32 labels; torch itself is not imported here.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from mcap.exceptions import McapError
from mcap.reader import NonSeekingReader
from PIL import Image

TOPICS = ("/frame", "/camera/image", "/controls")


@dataclass
class Drive:
    images: np.ndarray
    labels: np.ndarray
    frame_ids: np.ndarray
    # Frames without a /controls record of their frame id.
    unlabelled: int
    # Why reading stopped early, for a truncated file (what came before is read).
    truncated: Optional[str] = None


def label_of(controls: dict, choice: str = "operator") -> Tuple[float, float]:
    """[steering, throttle] of a frame from its /controls record (the export's rule)."""
    commanded = (controls["steering"], controls["throttle"])
    operator = controls.get("operator")
    if choice == "commanded" or controls["mode"] != "driving" or operator is None:
        return commanded
    if controls["pilot"] == "manual":
        return operator["steering"], operator["throttle"]
    if controls["pilot"] == "assist":
        return controls["steering"], operator["throttle"]
    return commanded


def read_drive(path: str, label: str = "operator", size: Optional[Tuple[int, int]] = None) -> Drive:
    """Reads `path` in written order; `size` (width, height) resizes every image."""
    labels: Dict[int, Optional[dict]] = {}
    frames: List[Tuple[int, bytes]] = []
    pending: Optional[int] = None
    truncated = None
    with open(path, "rb") as f:
        # In written order, front to back: also a file whose recorder was killed, up to the
        # damage (ads-record --recover gives it its index back).
        messages = NonSeekingReader(f).iter_messages(topics=TOPICS, log_time_order=False)
        try:
            for _schema, channel, message in messages:
                record = json.loads(message.data)
                if channel.topic == "/controls":
                    # A frame id with two records (a vehicle restarted within the recording)
                    # has no certain label: skipped, as the export skips it.
                    frame_id = record["frame_id"]
                    labels[frame_id] = None if frame_id in labels else record
                elif channel.topic == "/frame":
                    pending = record["frame_id"]
                elif pending is not None:
                    frames.append((pending, base64.b64decode(record["data"])))
                    pending = None
        except (McapError, EOFError) as e:
            truncated = f"{type(e).__name__}: {e}"
    images, values, ids = [], [], []
    for frame_id, jpeg in frames:
        controls = labels.get(frame_id)
        if controls is None:
            continue
        image = Image.open(io.BytesIO(jpeg)).convert("RGB")
        if size is not None and image.size != size:
            image = image.resize(size)
        images.append(np.asarray(image, dtype=np.uint8))
        values.append(label_of(controls, label))
        ids.append(frame_id)
    return Drive(
        images=np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8),
        labels=np.asarray(values, dtype=np.float64).reshape(-1, 2),
        frame_ids=np.asarray(ids, dtype=np.uint64),
        unlabelled=len(frames) - len(ids),
        truncated=truncated,
    )


class DriveDataset:
    """A map-style dataset for ``torch.utils.data.DataLoader``."""

    def __init__(self, drive: Drive):
        self.drive = drive

    def __len__(self) -> int:
        return len(self.drive.labels)

    def __getitem__(self, i: int):
        image = self.drive.images[i].transpose(2, 0, 1).astype(np.float32) / 255.0
        return image, self.drive.labels[i].astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recording", help="an ads-record MCAP file")
    parser.add_argument("--out", help="write images, labels and frame_ids to this .npz")
    parser.add_argument("--label", choices=("operator", "commanded"), default="operator")
    parser.add_argument("--resize", metavar="WxH", help="resize every image, e.g. 160x120")
    parser.add_argument("--summary", action="store_true", help="print what was read as JSON")
    args = parser.parse_args()
    size = tuple(int(n) for n in args.resize.split("x")) if args.resize else None

    drive = read_drive(args.recording, args.label, size)
    if args.out:
        np.savez(args.out, images=drive.images, labels=drive.labels, frame_ids=drive.frame_ids)
    dataset = DriveDataset(drive)
    if args.summary:
        json.dump(
            {
                "frames": len(dataset),
                "unlabelled": drive.unlabelled,
                "truncated": drive.truncated,
                "images": {"shape": list(drive.images.shape), "dtype": str(drive.images.dtype)},
                "labels": {"shape": list(drive.labels.shape), "values": drive.labels.tolist()},
                "frame_ids": drive.frame_ids.tolist(),
                "first_image_mean": float(drive.images[0].mean()) if len(dataset) else None,
            },
            sys.stdout,
        )
    else:
        print(
            f"{len(dataset)} frames, images {drive.images.shape} {drive.images.dtype}, "
            f"labels {drive.labels.shape} (steering + = left, throttle - = brake); "
            f"{drive.unlabelled} without a label"
            + (f"; the file is truncated ({drive.truncated}): read up to the damage" if drive.truncated else ""),
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
