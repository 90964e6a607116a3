#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) and fails if any of them crashes.
#
#   fuzz/run.sh [SECONDS]
#
# Each target starts from its checked-in seeds (fuzz/corpus/TARGET, read only); what a run
# discovers goes to a temporary folder that is removed afterwards, so the seeds never grow
# by themselves. A crashing input is kept in fuzz/artifacts/TARGET/ and its path printed;
# replay it with `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET PATH` in fuzz/.
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the pinned stable
# toolchain accept them, so no nightly toolchain is needed.
set -euo pipefail
seconds=${1:-30}
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

# 0.13.2 builds with the pinned toolchain (1.95); pinned so a new release cannot break CI.
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

targets=$(cargo fuzz list)
cargo fuzz build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=()
for target in $targets; do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "$work/$target" "artifacts/$target"
  touch "$work/start"
  # -timeout: an input that takes 10 s is a hang worth reporting for these parsers.
  if cargo fuzz run "$target" "$work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1; then
    passed=$((passed + 1))
  else
    failed+=("$target")
    find "$PWD/artifacts/$target" -type f -newer "$work/start" \
      -printf "fuzz: $target crashed on %p\n"
  fi
done

echo "fuzz: $passed passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashed: ${failed[*]}" >&2
  exit 1
fi
