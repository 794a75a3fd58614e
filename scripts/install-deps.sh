#!/usr/bin/env bash
# Install the Debian 12 packages libsim needs to build and test. Idempotent: does nothing when all are present.
set -euo pipefail

packages=(
  build-essential meson ninja-build pkg-config cmake
  libbotan-2-dev libfmt-dev libsqlitecpp-dev libsqlite3-dev doctest-dev libasio-dev libncurses-dev
  pybind11-dev python3-dev python3-pytest
  libmariadb-dev mariadb-server
  libnats-dev nats-server
  libpq-dev postgresql
  libbenchmark-dev
  clang llvm libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install packages (run as root or install them by hand)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The distribution's mariadb and postgresql services are not used: tests start their own throwaway servers.
