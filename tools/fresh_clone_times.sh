#!/usr/bin/env bash
# Time what a newcomer runs, on a fresh clone of this checkout's HEAD: `make install` (the venv
# from the lock), then `make demo`, then optionally `make test`. Writes the record the README's
# timings come from:
#
#   tools/fresh_clone_times.sh records/fresh_clone/times.txt [--with-test]
#
# The clone goes to a temporary folder, removed afterwards.
set -euo pipefail

out=${1:?usage: tools/fresh_clone_times.sh OUTPUT_FILE [--with-test]}
with_test=${2:-}
repo=$(git rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse --short HEAD)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/biofa"
mkdir -p "$(dirname "$out")"

seconds() {  # seconds <log> <make target>: run it in the clone, print its wall time
    local start end
    start=$(date +%s.%N)
    make -C "$work/biofa" "$2" >"$1" 2>&1 || { tail -30 "$1" >&2; echo "make $2 failed" >&2; exit 1; }
    end=$(date +%s.%N)
    python3 -c "print(f'{$end - $start:.0f}')"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
install_s=$(seconds "$work/install.log" install)
demo_s=$(seconds "$work/demo.log" demo)
{
    echo "commit: $commit (fresh clone)"
    echo "date: $(date -u +%FT%TZ)"
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "load average before: $load_before"
    echo "make install: $install_s s"
    echo "make demo (after the install): $demo_s s"
    echo "make demo, its study and compare summaries:"
    grep -E '^quickstart: [0-9]+ runs|agree with it bit for bit' "$work/demo.log" | sed 's/^/    /'
} >"$out"
if [ "$with_test" = "--with-test" ]; then
    test_s=$(seconds "$work/test.log" test)
    {
        echo "make test (after the install): $test_s s"
        echo "make test, last line: $(grep -E '(passed|failed)' "$work/test.log" | tail -1)"
    } >>"$out"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out"
cat "$out"
