"""Opens a Donkey Car tub with the `donkeycar` package's own reader (`donkeycar.parts.tub_v2.Tub`,
and `donkeycar.pipeline.types.TubRecord` for the images, as `donkey train` loads them) and
prints what it found as one JSON object, for tests/tests/export.rs to judge.

    check_tub.py TUB

Besides reading it, checks the layout donkeycar's writer produces and its reader relies on:
catalog lines as `json.dumps(record, sort_keys=True)` writes them, and each catalog
manifest's line lengths equal to its catalog's lines (the reader seeks by them). Exits
non-zero, the reason on stderr, if donkeycar cannot open the tub or the layout differs.
"""

import contextlib
import json
import os
import sys


def main():
    tub_path = sys.argv[1]
    # donkeycar prints a banner on import: keep stdout for the report.
    with contextlib.redirect_stdout(sys.stderr):
        import donkeycar
        from donkeycar.config import Config
        from donkeycar.parts.tub_v2 import Tub
        from donkeycar.pipeline.types import TubRecord

    tub = Tub(tub_path, read_only=True)
    try:
        records = list(tub)
        # Donkey's default camera (templates/cfg_complete.py): `donkey train` loads each
        # image at this size, resizing any other.
        config = Config()
        config.IMAGE_W, config.IMAGE_H, config.IMAGE_DEPTH = 160, 120, 3
        shapes = {}
        for record in records:
            image = TubRecord(config, tub.base_path, record).image()
            if image is None:  # donkeycar logs the reason and gives None
                sys.exit(f"record {record['_index']}: the image does not load")
            key = "x".join(str(n) for n in image.shape)
            shapes[key] = shapes.get(key, 0) + 1
        manifest = tub.manifest
        report = {
            "reader": "donkeycar",
            "version": donkeycar.__version__,
            "len": len(tub),
            "inputs": manifest.inputs,
            "types": manifest.types,
            "metadata": manifest.metadata,
            "sessions": manifest.manifest_metadata.get("sessions"),
            "catalogs": manifest.catalog_paths,
            "records": records,
            "image_shapes": shapes,
        }
    finally:
        tub.close()

    for name in manifest.catalog_paths:
        with open(os.path.join(tub_path, name), encoding="ascii") as f:
            lines = f.read().splitlines(keepends=True)
        for line in lines:
            record = json.loads(line)
            if line != json.dumps(record, allow_nan=False, sort_keys=True) + "\n":
                sys.exit(f"{name}: not as donkeycar writes it: {line!r}")
        stem = name[: -len(".catalog")]
        with open(os.path.join(tub_path, f"{stem}.catalog_manifest"), encoding="ascii") as f:
            catalog_manifest = json.loads(f.readline())
        if catalog_manifest["line_lengths"] != [len(line) for line in lines]:
            sys.exit(f"{stem}.catalog_manifest: line lengths differ from {name}'s")
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
