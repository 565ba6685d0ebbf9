"""Every bad argument raises a clear Python exception and publishes nothing.

Run with the name of a live 320x240 frame ring (from `ads-ring write`) and a free ring name
prefix; prints "ok" and exits 0 when every check held.
"""

import argparse
import math
import os
import sys

import ads

failures = []


def raises(exc, contains, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc as e:
        if contains not in str(e):
            failures.append(f"{fn.__name__}: {exc.__name__} {str(e)!r} lacks {contains!r}")
        return
    except Exception as e:  # noqa: BLE001 - report the wrong type
        failures.append(f"{fn.__name__}: raised {type(e).__name__}: {e}, expected {exc.__name__}")
        return
    failures.append(f"{fn.__name__} {kwargs}: did not raise {exc.__name__}")


def good_lanes(**change):
    fields = dict(
        h_samples=[300, 310, 320], left=[100.0, None, 90.0], right=[700.0, 710.0, None],
        left_confidence=0.9, right_confidence=0.8, lateral_offset_m=0.1, heading_error_rad=0.01,
        curvature_radius_m=None,
    )
    fields.update(change)
    return ads.Lanes(**fields)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--frames-ring", required=True)
    p.add_argument("--prefix", required=True)
    args = p.parse_args()
    R = ads.FrameReader

    # Attaching.
    raises(ads.RingNotFound, "no ring named", R, f"{args.prefix}-missing")
    raises(ads.LayoutMismatch, "width is 320 in the ring, 640 expected here", R, args.frames_ring, width=640, height=240)
    raises(ads.LayoutMismatch, "height is 240 in the ring, 480 expected here", R, args.frames_ring, width=320, height=480)
    raises(ValueError, "invalid ring name", R, "../etc")
    raises(ValueError, "mode", R, args.frames_ring, mode="newest")
    raises(ValueError, "both width and height", R, args.frames_ring, width=320)
    raises(ValueError, "format", R, args.frames_ring, format="yuv")
    raises(TypeError, "", R, args.frames_ring, width="320", height=240)

    # Reading.
    reader = R(args.frames_ring, width=320, height=240)
    for bad in (-1.0, math.nan, math.inf):
        raises(ValueError, "timeout", reader.read, bad)
    frame = reader.read(timeout=5.0)
    assert frame is not None and frame.pixels.shape == (240, 320, 3), frame
    raises(ValueError, "read-only", frame.pixels.__setitem__, (0, 0, 0), 1)
    reader.close()
    raises(ValueError, "closed", reader.read, 0.1)

    # Detections.
    name = f"{args.prefix}-det"
    writer = ads.DetectionsWriter(name)
    raises(ads.WriterAlive, "already written by a live writer", ads.DetectionsWriter, name)
    raises(ads.LayoutMismatch, "kind", R, name)
    copied = R(args.frames_ring).read_copy(timeout=5.0)
    assert copied is not None
    pub = writer.publish
    raises(ValueError, "left[1] is NaN: use None", pub, copied, good_lanes(left=[1.0, math.nan, 2.0]))
    raises(ValueError, "right[0] is inf", pub, copied, good_lanes(right=[math.inf, None, None]))
    raises(ValueError, "left has 2 columns for 3 h_samples", pub, copied, good_lanes(left=[1.0, 2.0]))
    raises(ValueError, "h_samples[1] is 300: rows must increase", pub, copied, good_lanes(h_samples=[300, 300, 320]))
    raises(ValueError, "h_samples[0] is -1", pub, copied, good_lanes(h_samples=[-1, 300, 320]))
    raises(ValueError, "h_samples has 0 rows", pub, copied, good_lanes(h_samples=[], left=[], right=[]))
    raises(ValueError, "left_confidence is 1.5", pub, copied, good_lanes(left_confidence=1.5))
    raises(ValueError, "lateral_offset_m is NaN", pub, copied, good_lanes(lateral_offset_m=math.nan))
    raises(ValueError, "heading_error_rad is 4", pub, copied, good_lanes(heading_error_rad=4.0))
    raises(ValueError, "curvature_radius_m is 0", pub, copied, good_lanes(curvature_radius_m=0.0))
    obj = dict(class_name="car", class_id=3, score=0.9, x_px=1.0, y_px=2.0, w_px=3.0, h_px=4.0)
    raises(ValueError, "objects[0].class_id is 70000", pub, copied, None, [ads.DetectedObject(**{**obj, "class_id": 70000})])
    raises(ValueError, "objects[1].score is 2", pub, copied, None,
           [ads.DetectedObject(**obj), ads.DetectedObject(**{**obj, "score": 2.0})])
    raises(ValueError, "negative size", pub, copied, None, [ads.DetectedObject(**{**obj, "w_px": -1.0})])
    raises(ValueError, "objects[0].class must be", pub, copied, None, [ads.DetectedObject(**{**obj, "class_name": ""})])
    raises(ValueError, "does not fit ring", pub, copied, None, [ads.DetectedObject(**obj)] * 3000)
    # Nothing of the above was published; a good record is.
    seq = pub(copied, good_lanes(), [ads.DetectedObject(**obj)])
    assert seq == 0, f"the bad records were published: the first good one is number {seq}"
    writer.close()
    raises(ValueError, "closed", pub, copied, None)
    assert not os.path.exists(f"/dev/shm/ads.{name}"), "closing left the ring behind"

    # The protocol.
    raises(ads.ProtocolError, "unknown topic", ads._native.decode, [b"nope", b"\x80"])
    raises(ads.ProtocolError, "expected 2 or 3 message parts", ads._native.decode, [b"state"])
    raises(ValueError, "not an action", ads._native.encode_action, "car", 1, 1, '{"id": 1}')
    raises(ValueError, "/nonexistent.key", ads._native.ActionKey, "/nonexistent.key")

    if failures:
        print("\n".join(failures))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
