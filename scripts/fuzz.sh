#!/usr/bin/env bash
# Build the libFuzzer targets (tests/fuzz/fuzz_*.cpp) with clang and run each one for a bounded time.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 20
#   TARGET              e.g. frame or fuzz_frame; default: every tests/fuzz/fuzz_*.cpp
# Env:   SIM_FUZZ_BUILD_DIR (default build-fuzz), SIM_JOBS (ninja parallelism, default 2)
#
# Each target fuzzes from tests/fuzz/corpus/<target>/, tests/fuzz/regressions/<target>/ and the build folder's
# corpus. The run writes only into the build folder: inputs that add coverage are merged into
# BUILD/corpus/<target>/ (copy them to tests/fuzz/corpus/<target>/ to keep them), and a crash, leak, timeout or
# out-of-memory input is copied into BUILD/regressions/<target>/ (copy it to tests/fuzz/regressions/<target>/, where
# the normal build replays it as a test: meson test --suite fuzz-regressions); the script then exits with status 1.
set -euo pipefail

die() { echo "fuzz.sh: $*" >&2; exit 2; }

cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-20}
[ $# -gt 0 ] && shift
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || die "SECONDS_PER_TARGET must be a positive integer, got '$seconds'"
builddir=${SIM_FUZZ_BUILD_DIR:-build-fuzz}
jobs=${SIM_JOBS:-2}

command -v clang++ >/dev/null || die "clang++ not found (libFuzzer needs clang; Debian: apt-get install clang)"

# Which targets.
targets=()
if [ $# -gt 0 ]; then
    for t in "$@"; do
        t=${t#fuzz_}
        [ -f "tests/fuzz/fuzz_$t.cpp" ] || die "no such target: tests/fuzz/fuzz_$t.cpp"
        targets+=("fuzz_$t")
    done
else
    for src in tests/fuzz/fuzz_*.cpp; do
        [ -e "$src" ] || continue
        t=$(basename "$src" .cpp)
        targets+=("$t")
    done
fi
[ ${#targets[@]} -gt 0 ] || die "no fuzz targets found in tests/fuzz/"

# Configure. The whole library is compiled with coverage instrumentation (fuzzer-no-link) and ASan + UBSan, so
# libFuzzer sees the decoders' branches; the targets themselves get -fsanitize=fuzzer from tests/fuzz/meson.build.
# --reconfigure picks up target sources added since the last run (meson.build checks which ones exist).
setup_args=(-Dfuzz=true -Dtests=true -Db_lundef=false -Db_sanitize=address,undefined
            "-Dcpp_args=-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined"
            -Dpython=disabled -Dbenchmarks=false -Dbuildtype=debugoptimized)
if [ -f "$builddir/build.ninja" ]; then
    # The C++ compiler the build dir was configured with (first C++ source of any target).
    compiler=$(/usr/bin/python3 - "$builddir/meson-info/intro-targets.json" <<'PY'
import json, os, sys
for target in json.load(open(sys.argv[1])):
    for src in target.get("target_sources", []):
        if src.get("language") == "cpp" and src.get("compiler"):
            print(os.path.basename(src["compiler"][0]))
            sys.exit(0)
print("unknown")
PY
) || die "cannot read the compiler of $builddir"
    [[ "$compiler" == clang* ]] || die "$builddir was configured with $compiler, not clang++; remove it and rerun"
    echo "== reconfigure $builddir"
    meson setup --reconfigure "$builddir" "${setup_args[@]}" >"$builddir/fuzz-setup.log" 2>&1 ||
        { tail -n 30 "$builddir/fuzz-setup.log" >&2; die "meson setup failed"; }
else
    echo "== configure $builddir (clang)"
    mkdir -p "$builddir"
    CXX=clang++ CC=clang meson setup "$builddir" "${setup_args[@]}" >"$builddir.setup.log" 2>&1 ||
        { tail -n 30 "$builddir.setup.log" >&2; die "meson setup failed (log: $builddir.setup.log)"; }
    mv "$builddir.setup.log" "$builddir/fuzz-setup.log"
fi

echo "== build ${targets[*]}"
ninja_targets=()
for t in "${targets[@]}"; do ninja_targets+=("tests/fuzz/$t"); done
ninja -C "$builddir" -j "$jobs" "${ninja_targets[@]}" || die "build failed"

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

work=$(mktemp -d "${TMPDIR:-/tmp}/simfuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=()
for t in "${targets[@]}"; do
    bin="$builddir/tests/fuzz/$t"
    kept="tests/fuzz/corpus/$t"
    regress="tests/fuzz/regressions/$t"
    corpus="$builddir/corpus/$t"
    found="$builddir/regressions/$t"
    new="$work/$t/new"
    artifacts="$work/$t/artifacts"
    log="$work/$t/log"
    mkdir -p "$corpus" "$found" "$new" "$artifacts"
    [ -x "$bin" ] || die "$bin was not built"

    echo "== fuzz $t for ${seconds}s"
    rc=0
    # New inputs go to the first folder ($new); the corpora and the regressions seed the run.
    seeds=("$corpus")
    for d in "$kept" "$regress"; do
        [ -d "$d" ] && seeds+=("$d")
    done
    "$bin" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$new" "${seeds[@]}" >"$log" 2>&1 || rc=$?

    crashes=()
    for f in "$artifacts"/*; do
        [ -f "$f" ] && crashes+=("$f")
    done
    if [ "$rc" -ne 0 ] || [ ${#crashes[@]} -gt 0 ]; then
        echo "!! $t FAILED (exit status $rc); last lines of its log:" >&2
        tail -n 40 "$log" >&2
        for f in "${crashes[@]}"; do
            cp "$f" "$found/"
            echo "!! kept $(basename "$f") as $found/$(basename "$f") (replay: $bin $found/$(basename "$f");" \
                "copy it to $regress/ to keep it as a test)" >&2
        done
        failed+=("$t")
        continue
    fi
    stats=$(grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$log" | tail -n 1 || true)
    echo "   ok: ${stats:-no stats}"

    # Keep only the new inputs that add coverage.
    before=$(find "$corpus" -type f ! -name '.*' | wc -l)
    if ! "$bin" -merge=1 "$corpus" "$new" >"$work/$t/merge.log" 2>&1; then
        echo "!! $t: corpus merge failed; last lines:" >&2
        tail -n 20 "$work/$t/merge.log" >&2
        failed+=("$t")
        continue
    fi
    after=$(find "$corpus" -type f ! -name '.*' | wc -l)
    echo "   corpus $corpus: $before -> $after inputs"
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: all ${#targets[@]} targets ran ${seconds}s without a crash"
