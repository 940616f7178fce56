#!/usr/bin/env bash
# Fetches the cudnn-frontend C++ headers (a header-only API over cuDNN's graph backend) into DEST/include.
#
# Usage: scripts/fetch_cudnn_frontend.sh DEST
#
# Runs at configure time only (cmake/cuda.cmake calls it when ${CMAKE_BINARY_DIR}/_deps/cudnn_frontend/include is
# missing); nothing fetches anything at run time. The headers come from NVIDIA's PyPI wheel nvidia-cudnn-frontend,
# PINNED to one version and one file whose sha256 is checked before anything is extracted. The headers do not
# depend on the Python version or the CPU, so one wheel (CPython 3.11, x86_64) serves every host.
#
# Invariants: DEST/include holds exactly the wheel's include/ tree (cudnn_frontend.h and its subfolders) and
# DEST/VERSION names the version it came from; a second run with the same version does nothing; a failed run
# leaves DEST as it was (the tree is built in a temporary folder and moved into place last).
#
# Offline machines: set FRUGAL_CUDNN_FRONTEND_WHEEL to the path of the same wheel file, downloaded elsewhere with
#   pip download nvidia-cudnn-frontend==1.32.0 --no-deps --only-binary :all: --python-version 3.11 \
#       --implementation cp --abi cp311 --platform manylinux_2_28_x86_64
# It is checked against the same sha256.
set -euo pipefail

readonly version="1.32.0"
readonly wheel="nvidia_cudnn_frontend-${version}-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
readonly sha256="c6006556017a4d1c914c52a556c71b1267f2d6a0500f742e7b4edef539878df0"

if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 DEST   (the headers go to DEST/include)" >&2
  exit 2
fi
dest="$1"

if [[ -f "$dest/include/cudnn_frontend.h" && -f "$dest/VERSION" && "$(cat "$dest/VERSION")" == "$version" ]]; then
  echo "cudnn-frontend $version: already in $dest/include"
  exit 0
fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "error: cudnn-frontend $version: $python not found; it is needed to download and unpack the wheel." >&2
  echo "  fix: install python3 with pip (apt-get install python3-pip), or set PYTHON to an interpreter" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [[ -n "${FRUGAL_CUDNN_FRONTEND_WHEEL:-}" ]]; then
  cp "$FRUGAL_CUDNN_FRONTEND_WHEEL" "$tmp/$wheel"
else
  echo "cudnn-frontend $version: downloading $wheel from PyPI"
  if ! "$python" -m pip download "nvidia-cudnn-frontend==$version" --no-deps --only-binary :all: \
      --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
      --disable-pip-version-check --quiet --timeout 30 --retries 1 -d "$tmp" >"$tmp/pip.log" 2>&1; then
    tail -n 5 "$tmp/pip.log" >&2
    echo "error: cudnn-frontend $version: could not download nvidia-cudnn-frontend==$version from PyPI" >&2
    echo "  (is PyPI reachable from this machine, and is pip installed for $python?)" >&2
    echo "  fix: download $wheel on a connected machine and set FRUGAL_CUDNN_FRONTEND_WHEEL to its path," >&2
    echo "  or configure with -DFRUGAL_CUDA=OFF to build without the CUDA backend" >&2
    exit 1
  fi
fi

if [[ ! -f "$tmp/$wheel" ]]; then
  echo "error: cudnn-frontend $version: expected $wheel, got: $(ls "$tmp" | grep -v pip.log | tr '\n' ' ')" >&2
  exit 1
fi

"$python" - "$tmp/$wheel" "$sha256" "$tmp/out" <<'EOF'
import hashlib
import os
import sys
import zipfile

path, want, out = sys.argv[1:4]
with open(path, "rb") as f:
    got = hashlib.sha256(f.read()).hexdigest()
if got != want:
    sys.exit(f"error: {os.path.basename(path)} has sha256 {got}, expected {want}: refusing to unpack it")
with zipfile.ZipFile(path) as z:
    headers = [n for n in z.namelist()
               if n.startswith("include/") and (n.endswith((".h", ".hpp")) or "/LICENSE" in n)]
    if "include/cudnn_frontend.h" not in headers:
        sys.exit(f"error: {os.path.basename(path)} has no include/cudnn_frontend.h")
    for name in headers:
        z.extract(name, out)
print(f"cudnn-frontend: {len(headers)} header files")
EOF

echo "$version" >"$tmp/out/VERSION"
mkdir -p "$dest"
rm -rf "$dest/include" "$dest/VERSION"
mv "$tmp/out/include" "$dest/include"
mv "$tmp/out/VERSION" "$dest/VERSION"
echo "cudnn-frontend $version: headers in $dest/include"
