"""Reads an ads recording with the `mcap` package (an MCAP reader independent of ads-record)
and prints what it found as one JSON object, for tests/tests/record.rs to judge.

    check_recording.py FILE [--linear] [--image-out JPEG]

--linear reads the data section front to back and stops quietly where the file ends early
(a recorder killed mid-write); otherwise the file must be complete and indexed.
"""

import argparse
import base64
import json
import sys

from mcap.exceptions import McapError
from mcap.reader import NonSeekingReader, make_reader


def jpeg_size(data: bytes):
    """(width, height) from a JPEG's SOF marker, or None."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker, length = data[i + 1], (data[i + 2] << 8) | data[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (data[i + 7] << 8) | data[i + 8], (data[i + 5] << 8) | data[i + 6]
        i += 2 + length
    return None


def annotations_inside(images, annotations):
    """Pairs each annotation message with the image of the same capture time (publish time:
    a frame, its detection and its truth share it) and counts those
    with a point or text outside that image."""
    out = {"checked": 0, "outside": 0, "unpaired": 0, "examples": []}
    for t, body in annotations:
        size = images.get(t)
        if size is None:
            out["unpaired"] += 1
            continue
        out["checked"] += 1
        points = [p for a in body["points"] for p in a["points"]] + [a["position"] for a in body["texts"]]
        outside = [p for p in points if not (0 <= p["x"] <= size[0] and 0 <= p["y"] <= size[1])]
        if outside:
            out["outside"] += 1
            if len(out["examples"]) < 3:
                out["examples"].append({"image": list(size), "point": outside[0]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--linear", action="store_true")
    parser.add_argument("--image-out", help="write the last recorded image here")
    args = parser.parse_args()

    out = {"channels": {}, "counts": {}, "frame_ids": [], "frame_seqs": [], "states": [], "truncated": None,
           "image_sizes": {}}
    # Image sizes by capture time, and the annotations to pair with them.
    images, annotations = {}, []
    with open(args.file, "rb") as f:
        if args.linear:
            reader = NonSeekingReader(f)
            messages = reader.iter_messages(log_time_order=False)
        else:
            reader = make_reader(f)
            summary = reader.get_summary()
            if summary is None:
                print("no summary: the file is not complete", file=sys.stderr)
                return 2
            out["summary_counts"] = {
                summary.channels[cid].topic: n for cid, n in summary.statistics.channel_message_counts.items()
            }
            out["summary_channels"] = {
                c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()
            }
            messages = reader.iter_messages()
        image_written = False
        try:
            for schema, channel, message in messages:
                out["channels"][channel.topic] = {
                    "schema": schema.name if schema else None,
                    "schema_encoding": schema.encoding if schema else None,
                    "message_encoding": channel.message_encoding,
                }
                out["counts"][channel.topic] = out["counts"].get(channel.topic, 0) + 1
                body = json.loads(message.data)
                if channel.topic == "/frame":
                    out["frame_ids"].append(body["frame_id"])
                    out["frame_seqs"].append(body["envelope"]["seq"])
                elif channel.topic == "/state":
                    drops = body["drops"]
                    link_skipped = sum(v.get("frames_skipped", 0) for v in body.get("link", {}).get("viewers", []))
                    out["states"].append(
                        {"frame_id": body["frame_id"], "not_broadcast": drops["frames_not_broadcast"],
                         "overrun": drops["frames_overrun"], "link_skipped": link_skipped})
                elif channel.topic.endswith("/annotations"):
                    annotations.append((message.publish_time, body))
                if channel.topic == "/camera/image":
                    size = jpeg_size(base64.b64decode(body["data"]))
                    key = f"{size[0]}x{size[1]}" if size else "undecodable"
                    out["image_sizes"][key] = out["image_sizes"].get(key, 0) + 1
                    if size:
                        images[message.publish_time] = size
                if channel.topic == "/camera/image" and args.image_out:
                    # The last image: the video link starts a new session on a small tier and
                    # works up to the full frame as it learns the link.
                    if body["format"] != "jpeg" or message.publish_time > message.log_time:
                        raise SystemExit(f"bad image message: format {body['format']}, "
                                         f"publish {message.publish_time} > log {message.log_time}")
                    with open(args.image_out, "wb") as image:
                        image.write(base64.b64decode(body["data"]))
                    image_written = True
        except (McapError, EOFError) as e:
            if not args.linear:
                raise
            out["truncated"] = f"{type(e).__name__}: {e}"
    out["annotations"] = annotations_inside(images, annotations)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
