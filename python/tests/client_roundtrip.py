"""ads.client against a running vehicle: decoded topics, and signed actions acknowledged.

Prints one JSON line: what was seen and the acknowledgements of `pause` and `resume`.
"""

import argparse
import json
import sys

from ads.client import VehicleClient


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--pub", required=True)
    p.add_argument("--actions", required=True)
    p.add_argument("--key-file", required=True)
    args = p.parse_args()
    with VehicleClient(args.pub, args.actions, key_file=args.key_file, sender="sdk-test") as car:
        state = car.recv(timeout=30, topics=("state",))
        assert state is not None, "no state within 30 s"
        car.vehicle = state.vehicle
        detection = car.recv(timeout=30, topics=("detection",))
        pause = car.send({"type": "pause"}, timeout=10)
        paused = car.recv(timeout=10, topics=("state",))
        while paused is not None and not paused.body["paused"]:
            paused = car.recv(timeout=10, topics=("state",))
        resume = car.send({"type": "resume"}, timeout=10)
    print(json.dumps({
        "vehicle": state.vehicle, "mode": state.body["mode"], "state_seq": state.seq,
        "detector": None if detection is None else detection.body["detector"],
        "pause": pause, "paused": paused is not None, "resume": resume,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
