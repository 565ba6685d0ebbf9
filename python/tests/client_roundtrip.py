"""ads.client against a running vehicle: decoded topics, and signed actions acknowledged.

Prints one JSON line: what was seen and the acknowledgements of `pause` and `resume`.
"""

import argparse
import json
import sys
import time

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
        # Manual driving: this client drives for a moment, then lets go; the vehicle's state
        # says how many drive commands it took and that the lease ran out.
        manual = car.set_drive_mode("manual", timeout=10)
        taken = 0
        deadline = time.monotonic() + 30
        while taken < 10 and time.monotonic() < deadline:
            car.drive(0.2, 0.3)
            message = car.recv(timeout=0.04, topics=("state",))
            if message is not None and message.body["teleop"]["pilot"] == "manual":
                taken = message.body["teleop"]["taken"]
        lapsed = None
        while lapsed is None and time.monotonic() < deadline:
            message = car.recv(timeout=1, topics=("state",))
            if message is not None and not message.body["teleop"]["live"] and message.body["teleop"]["lapsed"] > 0:
                lapsed = message.body["teleop"]
        autopilot = car.set_drive_mode("autopilot", timeout=10)
        car.send({"type": "resume"}, timeout=10)
    print(json.dumps({
        "vehicle": state.vehicle, "mode": state.body["mode"], "state_seq": state.seq,
        "detector": None if detection is None else detection.body["detector"],
        "pause": pause, "paused": paused is not None, "resume": resume,
        "manual": manual, "drives_taken": taken, "lapsed": lapsed, "autopilot": autopilot,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
