#!/usr/bin/env bash
# `make fuzz`: build every cargo-fuzz target once, run each for FUZZ_SECONDS (default 25) on a
# temporary copy of its committed seed corpus (fuzz/corpus/<target>/, so the repository does
# not grow), then print one table (target, runs, exec/s, status). Exit 1 when any target
# crashed, timed out or ran out of memory; its input is kept in fuzz/artifacts/<target>/ and
# its log is printed from just before the first `panicked at` / `ERROR: libFuzzer` line (the
# panic message) to the end, at most 80 lines of 8000 characters (the middle of a longer one is
# left out). Targets: the arguments, else all (`cargo fuzz list`).
#
# Builds use the nightly toolchain, optimised with debug assertions and overflow checks, and
# no sanitizer (the code under test is safe Rust; see docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")"

SECS="${FUZZ_SECONDS:-25}"
FLAGS=(--sanitizer none --debug-assertions)
# Per-input time limit (a slower input is a finding: hostile input must stay cheap), memory
# limit, and the input size bound every target also enforces itself.
LIBFUZZER=(-max_total_time="$SECS" -timeout=30 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1)

if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi

echo "fuzz: building the targets"
cargo +nightly fuzz build "${FLAGS[@]}" >/dev/null

# The failure part of a log: from 3 lines before the first panic or libFuzzer error (else
# the end) to the end, without libFuzzer's `#N` progress lines; bounded.
show_failure() {
  local shown="$1.shown" n first from
  grep -v '^#[0-9]' "$1" >"$shown" || true
  n="$(wc -l <"$shown")"
  first="$(grep -n -m1 -E 'panicked at|ERROR: libFuzzer' "$shown" | cut -d: -f1 || true)"
  first="${first:-$n}"
  from=$((first > 3 ? first - 3 : 1))
  {
    if [ $((n - from)) -lt 80 ]; then
      sed -n "${from},\$p" "$shown"
    else
      sed -n "${from},$((from + 39))p" "$shown"
      echo "[... $((n - from - 79)) lines left out ...]"
      tail -n 40 "$shown"
    fi
  } | cut -c1-8000
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

rows=()
failed=0
for t in "${TARGETS[@]}"; do
  mkdir -p "$WORK/$t"
  if [ -d "corpus/$t" ]; then
    cp -r "corpus/$t/." "$WORK/$t/"
  fi
  log="$WORK/$t.log"
  echo "fuzz: $t for ${SECS}s"
  set +e
  cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$WORK/$t" -- "${LIBFUZZER[@]}" >"$log" 2>&1
  rc=$?
  set -e
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  runs="${runs:-0}"
  if [ "$rc" -eq 0 ]; then
    status="ok"
  elif grep -q "ERROR: libFuzzer: timeout" "$log"; then
    status="TIMEOUT"
  elif grep -q "ERROR: libFuzzer: out-of-memory" "$log"; then
    status="OOM"
  else
    status="CRASH"
  fi
  if [ "$status" != "ok" ]; then
    failed=1
    echo "---- $t: $status (exit $rc); its log from the failure:"
    show_failure "$log"
    echo "---- input saved in fuzz/artifacts/$t/"
  fi
  rows+=("$t $runs $((runs / SECS)) $status")
done

echo
printf '%-20s %12s %10s  %s\n' target runs exec/s status
for r in "${rows[@]}"; do
  # shellcheck disable=SC2086
  printf '%-20s %12s %10s  %s\n' $r
done
exit "$failed"
