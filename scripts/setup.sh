#!/usr/bin/env bash
# Installs the Debian packages Frugal needs, only those that are missing.
# Idempotent: when everything is present it runs one dpkg query and exits.
set -euo pipefail

packages=(
  g++ make cmake pkg-config
  openmpi-bin libopenmpi-dev
  libeigen3-dev
  libyaml-cpp-dev
  libhdf5-openmpi-dev hdf5-tools zlib1g-dev
  libgtest-dev
  fortunes
  libpcre2-dev
  libutf8proc-dev
  libprotobuf-dev protobuf-compiler   # TensorBoard event records (trainer/tensorboard_event.proto)
  clang libclang-rt-14-dev libomp-dev   # scripts/fuzz.sh: libFuzzer and the sanitizers, OpenMP under clang
  python3-pip   # scripts/fetch_cudnn_frontend.sh: the cudnn-frontend headers' wheel, at configure time
  iproute2   # tests/multihost: network namespaces and a veth pair as two hosts
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
