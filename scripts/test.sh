#!/usr/bin/env bash
# Runs everything CI checks: formatting, clippy (warnings are errors), and all tests.
# Usage: scripts/test.sh            (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (unit tests and the end-to-end suite)"
cargo test --workspace --locked --no-fail-fast
