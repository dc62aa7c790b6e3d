#!/usr/bin/env bash
# The zero-downtime proof of tests/e2e/zero_downtime.rs, stretched to a soak:
# keeps repeating weight flips, reloads and drain cycles under load for
# SECONDS (default 120) and prints the totals and p99 latencies.
set -euo pipefail
cd "$(dirname "$0")/.."
ZERO_DOWNTIME_SECONDS=${1:-120} cargo test --release --test e2e zero_downtime:: -- --nocapture 2>&1 | grep -E "zero-downtime:|test result"
