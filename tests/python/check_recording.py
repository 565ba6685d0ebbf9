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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--linear", action="store_true")
    parser.add_argument("--image-out", help="write the last recorded image here")
    args = parser.parse_args()

    out = {"channels": {}, "counts": {}, "frame_ids": [], "frame_seqs": [], "states": [], "truncated": None}
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
                elif channel.topic == "/camera/image" and args.image_out:
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
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
