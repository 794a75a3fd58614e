#!/usr/bin/env bash
# Install libsim from a build dir into a temporary prefix and build a separate program against it via pkg-config.
set -euo pipefail
build_dir=$(realpath "${1:?usage: run.sh BUILD_DIR}")
here=$(cd "$(dirname "$0")" && pwd)
prefix=$(mktemp -d /tmp/libsim-consumer.XXXXXX)
trap 'rm -rf "$prefix"' EXIT

meson install -C "$build_dir" --destdir "$prefix" --quiet >/dev/null
installed_prefix=$(meson introspect "$build_dir" --buildoptions | /usr/bin/python3 -c \
  'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
libdir_rel=$(meson introspect "$build_dir" --buildoptions | /usr/bin/python3 -c \
  'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="libdir"))')
root="$prefix$installed_prefix"
pcdir="$root/$libdir_rel/pkgconfig"
[ -f "$pcdir/libsim.pc" ] || { echo "consumer: libsim.pc not installed in $pcdir" >&2; exit 1; }

version=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$root" --modversion libsim)
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --define-variable=prefix="$root" --cflags --libs libsim)
# shellcheck disable=SC2086
c++ -std=c++20 -Wall -Wextra -Werror -DSIM_CONSUMER_VERSION="\"$version\"" "$here/consumer.cpp" -o "$prefix/consumer" $flags
LD_LIBRARY_PATH="$root/$libdir_rel" "$prefix/consumer"
