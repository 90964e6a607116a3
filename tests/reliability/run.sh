#!/usr/bin/env bash
# Reliability checks a person runs by hand (docs/BENCHMARKS.md records their figures):
#   1. SIGKILL under load: how many answered requests have no invocation record;
#   2. a flood of idle and slow clients under a 1,024-descriptor limit: CPU, log volume,
#      and whether the node keeps answering;
#   3. a soak (SOAK_SECONDS, default 600) reporting RSS and descriptors every 15 s.
# Needs wrk (Debian's `wrk` package; installed here when missing and apt-get is usable) and
# python3. Builds the release binary and the examples first.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v wrk >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk
  else
    echo "reliability: wrk is needed: apt-get install wrk" >&2
    exit 1
  fi
fi
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release -p runway-cli
(cd examples && cargo build --release --target wasm32-wasip2)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A private copy: a build in the same target folder cannot swap the binary mid-run.
cp "${CARGO_TARGET_DIR:-target}/release/runway" "$work/runway"
exec python3 tests/reliability/reliability.py "$work" "${SOAK_SECONDS:-600}"
