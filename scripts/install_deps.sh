#!/usr/bin/env bash
# Installs the Debian 12 packages engram-ps builds, tests and benchmarks with.
# Idempotent: when every package is already installed it does nothing (no apt at all).
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libucx-dev ucx-utils librocksdb-dev libboost-dev libgflags-dev libgoogle-glog-dev
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
  etcd-server etcd-client redis-server libhiredis-dev
  python3 python3-numpy python3-sympy gnuplot-nox
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install_deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
