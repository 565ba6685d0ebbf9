#!/usr/bin/env python3
"""The CARLA side of ads-carla-bridge: one car with an RGB camera, in synchronous mode.

Started and supervised by ads-vehicle (--source carla); not meant to be run by hand. It
connects back to the bridge over a Unix socket and speaks the protocol of
carla-bridge/src/wire.rs: each message is <u32 header length><u32 payload length> (little
endian), a JSON header, then the payload (BGRA pixels for frames).

Rules it keeps, because CARLA servers punish breaking them:
- respawn moves the car with set_transform and zero velocity; it never destroys and spawns
  again (destroy-and-spawn is known to crash the server);
- pause stops ticking; in synchronous mode the server's time then stands still;
- on any exit (quit, socket closed, SIGTERM, error) the world is put back into asynchronous
  mode, so the server is not left waiting for ticks that never come.

Only the standard library and `carla` (PyPI carla==0.9.16). Every carla attribute used here
is checked against the installed package by check_carla_api.py, which knows the variable
names below (client, world, settings, ...) as carla types: keep those names.
"""

import argparse
import json
import math
import queue
import select
import signal
import socket
import struct
import sys
import time

PREFIX = struct.Struct("<II")


class Link:
    """The socket to the bridge."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buffer = b""

    def send(self, header, payload=b""):
        body = json.dumps(header).encode()
        self.sock.sendall(PREFIX.pack(len(body), len(payload)) + body)
        if payload:
            self.sock.sendall(payload)

    def commands(self, timeout):
        """Commands that arrived, waiting up to `timeout` seconds for the first one.
        Raises EOFError when the bridge has gone."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if ready:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the bridge closed the socket")
            self.buffer += chunk
        out = []
        while len(self.buffer) >= PREFIX.size:
            header_len, payload_len = PREFIX.unpack_from(self.buffer)
            end = PREFIX.size + header_len + payload_len
            if len(self.buffer) < end:
                break
            out.append(json.loads(self.buffer[PREFIX.size:PREFIX.size + header_len]))
            self.buffer = self.buffer[end:]
        return out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2000)
    p.add_argument("--width", type=int, default=800)
    p.add_argument("--height", type=int, default=600)
    p.add_argument("--fps", type=float, default=20.0)
    p.add_argument("--vehicle", default="vehicle.tesla.model3")
    p.add_argument("--timeout", type=float, default=5.0)
    return p.parse_args(argv)


class Terminated(Exception):
    pass


def on_sigterm(_signum, _frame):
    raise Terminated()


def main(argv):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    link = Link(args.socket)
    try:
        import carla
    except ImportError as e:
        link.send({"type": "error", "kind": "missing_carla",
                   "message": f"the carla Python package is not importable by {sys.executable} ({e}); "
                              "install it: pip install carla==0.9.16"})
        return 2
    client = carla.Client(args.host, args.port)
    client.set_timeout(args.timeout)
    try:
        world = client.get_world()
    except RuntimeError as e:
        link.send({"type": "error", "kind": "unreachable",
                   "message": f"CARLA server at {args.host}:{args.port} unreachable: {e}"})
        return 3
    original = world.get_settings()
    actors = []
    try:
        settings = world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = 1.0 / args.fps
        world.apply_settings(settings)
        drive(carla, world, link, args, actors)
    except (Terminated, EOFError, BrokenPipeError, ConnectionResetError):
        pass
    except RuntimeError as e:
        try:
            link.send({"type": "error", "kind": "failed", "message": f"CARLA: {e}"})
        except OSError:
            pass
        return 4
    finally:
        restore(world, original, actors)
    return 0


def restore(world, original, actors):
    """Asynchronous mode back on and our actors gone, whatever happened."""
    try:
        settings = world.get_settings()
        settings.synchronous_mode = False
        settings.fixed_delta_seconds = original.fixed_delta_seconds
        world.apply_settings(settings)
    except RuntimeError as e:
        print(f"ads-carla-sidecar: could not restore asynchronous mode: {e}", file=sys.stderr)
    for actor in reversed(actors):
        try:
            actor.destroy()
        except RuntimeError:
            pass


def spawn_car(world, blueprints, spawn_points, args):
    bp = blueprints.filter(args.vehicle)[0]
    for transform in spawn_points:
        vehicle = world.try_spawn_actor(bp, transform)
        if vehicle is not None:
            return vehicle
    raise RuntimeError(f"no free spawn point for {args.vehicle}")


def drive(carla, world, link, args, actors):
    blueprints = world.get_blueprint_library()
    carla_map = world.get_map()
    spawn_points = carla_map.get_spawn_points()
    vehicle = spawn_car(world, blueprints, spawn_points, args)
    actors.append(vehicle)
    camera_bp = blueprints.find("sensor.camera.rgb")
    camera_bp.set_attribute("image_size_x", str(args.width))
    camera_bp.set_attribute("image_size_y", str(args.height))
    camera_bp.set_attribute("fov", "80")
    mount = carla.Transform(carla.Location(x=1.5, z=1.3), carla.Rotation(pitch=-8.0))
    camera = world.spawn_actor(camera_bp, mount, attach_to=vehicle)
    actors.append(camera)
    images = queue.Queue()
    camera.listen(images.put)
    physics = vehicle.get_physics_control()
    max_steer_deg = max(w.max_steer_angle for w in physics.wheels) if physics.wheels else 70.0
    link.send({"type": "ready", "map": carla_map.name, "spawn_points": len(spawn_points),
               "max_steer_deg": max_steer_deg, "width": args.width, "height": args.height,
               "fps": args.fps})

    control = carla.VehicleControl(throttle=0.0, steer=0.0, brake=1.0)
    paused = False
    period = 1.0 / args.fps
    next_tick = time.monotonic()
    while True:
        wait = 0.1 if paused else max(0.0, next_tick - time.monotonic())
        for cmd in link.commands(wait):
            kind = cmd.get("cmd")
            if kind == "control":
                control = carla.VehicleControl(throttle=float(cmd["throttle"]), steer=float(cmd["steer"]),
                                               brake=float(cmd["brake"]))
            elif kind == "pause":
                paused = True
            elif kind == "resume":
                paused = False
                next_tick = time.monotonic()
            elif kind == "respawn":
                respawn(carla, vehicle, spawn_points, int(cmd["spawn_point"]), link)
                control = carla.VehicleControl(throttle=0.0, steer=0.0, brake=1.0)
            elif kind == "quit":
                return
        if paused or time.monotonic() < next_tick:
            continue
        next_tick += period
        if time.monotonic() - next_tick > period:
            next_tick = time.monotonic()
        vehicle.apply_control(control)
        frame = world.tick()
        image = next_image(images, frame)
        transform = vehicle.get_transform()
        velocity = vehicle.get_velocity()
        speed = math.sqrt(velocity.x ** 2 + velocity.y ** 2 + velocity.z ** 2)
        link.send({"type": "frame", "frame": image.frame, "sim_time_s": image.timestamp,
                   "width": image.width, "height": image.height,
                   "x_m": transform.location.x, "y_m": transform.location.y,
                   "yaw_deg": transform.rotation.yaw, "speed_mps": speed},
                  bytes(image.raw_data))


def next_image(images, frame):
    """The camera image of tick `frame` (older ones, from before a pause, are skipped)."""
    deadline = time.monotonic() + 10.0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"no camera image for frame {frame} within 10 s")
        try:
            image = images.get(timeout=left)
        except queue.Empty:
            continue
        if image.frame >= frame:
            return image


def respawn(carla, vehicle, spawn_points, index, link):
    if not 0 <= index < len(spawn_points):
        link.send({"type": "rejected", "detail": f"spawn point {index} does not exist (the map has {len(spawn_points)})"})
        return
    transform = spawn_points[index]
    vehicle.set_transform(transform)
    vehicle.set_target_velocity(carla.Vector3D(0.0, 0.0, 0.0))
    vehicle.set_target_angular_velocity(carla.Vector3D(0.0, 0.0, 0.0))
    link.send({"type": "respawned", "spawn_point": index,
               "x_m": transform.location.x, "y_m": transform.location.y})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
