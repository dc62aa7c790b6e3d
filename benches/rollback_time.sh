#!/usr/bin/env bash
# Time from a canary's first failing responses (10% 500s after a 50/50
# switch) to the previous weights being served again, with the default
# window (30 s), evaluation interval (1 s) and 2 consecutive breaches.
# Runs the end-to-end scenario N times (default 10) and prints the median.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
cargo test --quiet --test e2e --no-run >/dev/null 2>&1
times=()
for i in $(seq "$RUNS"); do
  t=$(cargo test --quiet --test e2e guard_e2e::a_canary_answering_10_percent_errors -- --nocapture 2>&1 \
      | sed -n 's/.*rollback after errors began: \([0-9.]*\)s.*/\1/p')
  echo "run $i: ${t}s" >&2
  times+=("$t")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "median of %d runs: %.2f s (min %.2f, max %.2f)\n", NR, m, a[1], a[NR]}'
