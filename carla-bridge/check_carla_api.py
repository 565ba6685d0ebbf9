#!/usr/bin/env python3
"""Checks that every carla API the sidecar uses exists in the installed carla package.

No CARLA server can run on CI, so this is what keeps the sidecar honest against the real
client library (PyPI carla==0.9.16): it walks the sidecar's syntax tree and checks
- every `carla.X` (and the keyword arguments of `carla.X(...)` constructors, which must be
  attributes of X),
- every attribute used on a variable whose name VARIABLES below types as a carla class,
  one level of attribute types deep (transform.location.x), and the keyword arguments of
  method calls, against the method's Boost.Python signature in its docstring.
A variable with an attribute access that is neither typed here nor known as non-carla is an
error: a new carla object must be added, not silently skipped.

Usage: check_carla_api.py [SIDECAR]   (exit 0: all present; 1: something is missing)
"""

import ast
import pathlib
import sys

VARIABLES = {
    "client": "Client",
    "world": "World",
    "settings": "WorldSettings",
    "original": "WorldSettings",
    "blueprints": "BlueprintLibrary",
    "bp": "ActorBlueprint",
    "camera_bp": "ActorBlueprint",
    "carla_map": "Map",
    "transform": "Transform",
    "mount": "Transform",
    "vehicle": "Vehicle",
    "camera": "Sensor",
    "actor": "Actor",
    "image": "Image",
    "velocity": "Vector3D",
    "physics": "VehiclePhysicsControl",
    "w": "WheelPhysicsControl",
    "control": "VehicleControl",
}
# Attributes whose type is another carla class, for chains like transform.location.x.
ATTRIBUTE_TYPES = {
    ("Transform", "location"): "Location",
    ("Transform", "rotation"): "Rotation",
}
NOT_CARLA = {"self", "link", "args", "p", "images", "queue", "json", "socket", "select", "struct", "sys",
             "time", "math", "signal", "argparse", "PREFIX", "cmd", "e", "f", "body", "chunk", "out",
             "actors", "__doc__"}


def check(sidecar, carla):
    tree = ast.parse(pathlib.Path(sidecar).read_text())
    problems, checked = [], set()

    def need(cls_name, attr, where):
        cls = getattr(carla, cls_name, None)
        checked.add(f"{cls_name}.{attr}")
        if cls is None:
            problems.append(f"line {where}: carla.{cls_name} does not exist")
        elif not hasattr(cls, attr):
            problems.append(f"line {where}: carla.{cls_name} has no attribute {attr!r}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            name, attr, line = node.value.id, node.attr, node.lineno
            if name == "carla":
                checked.add(attr)
                if not hasattr(carla, attr):
                    problems.append(f"line {line}: carla has no {attr!r}")
            elif name in VARIABLES:
                need(VARIABLES[name], attr, line)
            elif name not in NOT_CARLA:
                problems.append(f"line {line}: {name}.{attr}: unknown variable; type it in VARIABLES or NOT_CARLA")
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name) and node.value.value.id in VARIABLES):
            owner = ATTRIBUTE_TYPES.get((VARIABLES[node.value.value.id], node.value.attr))
            if owner:
                need(owner, node.attr, node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.keywords:
            f = node.func
            if isinstance(f.value, ast.Name) and f.value.id == "carla":
                for kw in node.keywords:
                    need(f.attr, kw.arg, node.lineno)
            elif isinstance(f.value, ast.Name) and f.value.id in VARIABLES:
                method = getattr(getattr(carla, VARIABLES[f.value.id], None), f.attr, None)
                doc = getattr(method, "__doc__", "") or ""
                for kw in node.keywords:
                    checked.add(f"{VARIABLES[f.value.id]}.{f.attr}({kw.arg}=)")
                    if f")" + kw.arg not in doc.replace(" ", ""):
                        problems.append(f"line {node.lineno}: {VARIABLES[f.value.id]}.{f.attr} takes no "
                                        f"keyword {kw.arg!r} (signature: {doc.strip().splitlines()[:1]})")
    return problems, checked


def main(argv):
    sidecar = argv[0] if argv else pathlib.Path(__file__).with_name("sidecar") / "ads_carla_sidecar.py"
    import carla
    version = getattr(carla, "__version__", None)
    try:
        from importlib.metadata import version as dist_version
        version = dist_version("carla")
    except Exception:  # the stand-in has no distribution metadata
        pass
    problems, checked = check(sidecar, carla)
    print(f"carla {version} from {carla.__file__}: {len(checked)} names used by the sidecar checked")
    for p in problems:
        print("MISSING", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
