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

# The README's C++ example builds as written (includes at file scope, the rest as the body of main) under -Werror.
readme="$here/../../README.md"
snippet="$prefix/readme_example.cpp"
awk '/^```cpp$/ { inside = 1; next } /^```$/ { if (inside) exit } inside' "$readme" > "$prefix/block.txt"
[ -s "$prefix/block.txt" ] || { echo "consumer: no C++ example found in README.md" >&2; exit 1; }
{ grep '^#include' "$prefix/block.txt"; echo 'int main() {'; grep -v '^#include' "$prefix/block.txt"; echo 'return 0; }'; } > "$snippet"
# shellcheck disable=SC2086
c++ -std=c++20 -Wall -Wextra -Werror "$snippet" -o "$prefix/readme_example" $flags ||
  { echo "consumer: the README's C++ example does not build" >&2; exit 1; }
echo "consumer: the README's C++ example builds"
