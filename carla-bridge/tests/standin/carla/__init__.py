"""STAND-IN FOR THE CARLA SERVER, FOR TESTS ONLY. This is not the carla package.

A CARLA server cannot run on the CI machine, so carla-bridge's tests put this directory first
on PYTHONPATH and run the real sidecar (sidecar/ads_carla_sidecar.py) against it. It offers
the subset of the carla 0.9.16 API the sidecar uses (check_carla_api.py checks that subset
against the real package), keeps a crude point-mass car, renders a BGRA test pattern
(B = frame % 251, G = x % 256, R = y % 256, A = 255), and logs every call that changes the
world as one JSON line to $ADS_STANDIN_CARLA_LOG so tests can see what the sidecar did.

Environment: ADS_STANDIN_CARLA_UNREACHABLE=1 makes get_world() fail as with no server.
"""

import json
import math
import os

_frame = [0]


def _log(call, **fields):
    path = os.environ.get("ADS_STANDIN_CARLA_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"call": call, "pid": os.getpid(), **fields}) + "\n")


class Vector3D:
    def __init__(self, x=0.0, y=0.0, z=0.0):
        self.x, self.y, self.z = float(x), float(y), float(z)


class Location(Vector3D):
    pass


class Rotation:
    def __init__(self, pitch=0.0, yaw=0.0, roll=0.0):
        self.pitch, self.yaw, self.roll = float(pitch), float(yaw), float(roll)


class Transform:
    def __init__(self, location=None, rotation=None):
        self.location = location or Location()
        self.rotation = rotation or Rotation()


class VehicleControl:
    def __init__(self, throttle=0.0, steer=0.0, brake=0.0):
        self.throttle, self.steer, self.brake = throttle, steer, brake


class WorldSettings:
    def __init__(self, synchronous_mode=False, fixed_delta_seconds=None):
        self.synchronous_mode = synchronous_mode
        self.fixed_delta_seconds = fixed_delta_seconds


class _Wheel:
    max_steer_angle = 70.0


class _Physics:
    wheels = [_Wheel(), _Wheel(), _Wheel(), _Wheel()]


class ActorBlueprint:
    def __init__(self, id):
        self.id = id
        self.attributes = {}

    def set_attribute(self, key, value):
        self.attributes[key] = value


class BlueprintLibrary:
    def filter(self, pattern):
        return [ActorBlueprint(pattern)]

    def find(self, id):
        return ActorBlueprint(id)


class Map:
    name = "StandIn/Town00"

    def get_spawn_points(self):
        return [Transform(Location(x=10.0 * i, y=2.0 * i), Rotation(yaw=15.0 * i)) for i in range(5)]


class Image:
    def __init__(self, frame, width, height):
        self.frame = frame
        self.timestamp = frame * 0.05
        self.width, self.height = width, height
        row = bytearray()
        for x in range(width):
            row += bytes((0, x % 256, 0, 255))
        rows = bytearray()
        for y in range(height):
            r = bytearray(row)
            r[0::4] = bytes([frame % 251]) * width
            r[2::4] = bytes([y % 256]) * width
            rows += r
        self.raw_data = bytes(rows)


class Actor:
    def __init__(self, world, blueprint, transform):
        self.world, self.blueprint = world, blueprint
        self.transform = transform
        self.alive = True

    def destroy(self):
        _log("destroy", actor=self.blueprint.id)
        self.alive = False
        return True


class Vehicle(Actor):
    def __init__(self, *a):
        super().__init__(*a)
        self.speed = 0.0
        self.control = VehicleControl()

    def apply_control(self, control):
        self.control = control
        _log("apply_control", throttle=control.throttle, steer=control.steer, brake=control.brake)

    def get_physics_control(self):
        return _Physics()

    def get_transform(self):
        return self.transform

    def get_velocity(self):
        yaw = math.radians(self.transform.rotation.yaw)
        return Vector3D(self.speed * math.cos(yaw), self.speed * math.sin(yaw), 0.0)

    def set_transform(self, transform):
        _log("set_transform", x=transform.location.x, y=transform.location.y, yaw=transform.rotation.yaw)
        self.transform = Transform(Location(transform.location.x, transform.location.y), Rotation(yaw=transform.rotation.yaw))

    def set_target_velocity(self, v):
        _log("set_target_velocity", x=v.x, y=v.y, z=v.z)
        self.speed = math.sqrt(v.x ** 2 + v.y ** 2 + v.z ** 2)

    def set_target_angular_velocity(self, v):
        _log("set_target_angular_velocity", x=v.x, y=v.y, z=v.z)

    def _step(self, dt):
        c = self.control
        self.speed = max(0.0, self.speed + (4.0 * c.throttle - 8.0 * c.brake) * dt)
        t = self.transform
        t.rotation.yaw += 30.0 * c.steer * dt * self.speed
        yaw = math.radians(t.rotation.yaw)
        t.location.x += self.speed * math.cos(yaw) * dt
        t.location.y += self.speed * math.sin(yaw) * dt


class Sensor(Actor):
    def __init__(self, *a):
        super().__init__(*a)
        self.callback = None

    def listen(self, callback):
        self.callback = callback


class World:
    def __init__(self):
        self.settings = WorldSettings()
        self.actors = []

    def get_settings(self):
        return WorldSettings(self.settings.synchronous_mode, self.settings.fixed_delta_seconds)

    def apply_settings(self, settings):
        _log("apply_settings", synchronous_mode=settings.synchronous_mode,
             fixed_delta_seconds=settings.fixed_delta_seconds)
        self.settings = WorldSettings(settings.synchronous_mode, settings.fixed_delta_seconds)
        return _frame[0]

    def get_blueprint_library(self):
        return BlueprintLibrary()

    def get_map(self):
        return Map()

    def try_spawn_actor(self, blueprint, transform, attach_to=None):
        return self.spawn_actor(blueprint, transform, attach_to=attach_to)

    def spawn_actor(self, blueprint, transform, attach_to=None):
        kind = Sensor if blueprint.id.startswith("sensor.") else Vehicle
        actor = kind(self, blueprint, transform)
        self.actors.append(actor)
        _log("spawn_actor", blueprint=blueprint.id, attributes=blueprint.attributes)
        return actor

    def tick(self, seconds=10.0):
        if not self.settings.synchronous_mode:
            raise RuntimeError("stand-in: tick() outside synchronous mode")
        _frame[0] += 1
        dt = self.settings.fixed_delta_seconds or 0.05
        for a in self.actors:
            if isinstance(a, Vehicle) and a.alive:
                a._step(dt)
        for a in self.actors:
            if isinstance(a, Sensor) and a.alive and a.callback:
                w = int(a.blueprint.attributes.get("image_size_x", 800))
                h = int(a.blueprint.attributes.get("image_size_y", 600))
                a.callback(Image(_frame[0], w, h))
        _log("tick", frame=_frame[0])
        return _frame[0]


class Client:
    def __init__(self, host, port, worker_threads=0):
        self.host, self.port = host, port
        _log("client", host=host, port=port)

    def set_timeout(self, seconds):
        self.timeout = seconds

    def get_world(self):
        if os.environ.get("ADS_STANDIN_CARLA_UNREACHABLE"):
            raise RuntimeError(f"time-out of {int(self.timeout * 1000)}ms while waiting for the simulator, "
                               f"make sure the simulator is ready and connected to {self.host}:{self.port}")
        return World()
