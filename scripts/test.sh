#!/usr/bin/env bash
# Runs everything CI checks: installs what the tests need (scripts/install-test-deps.sh: a
# no-op when it is all there), then formatting, clippy (warnings are errors), and all tests.
# Usage: scripts/test.sh            (from anywhere in the repository)
#   WEIR_SKIP_INSTALL=1   do not run the install script
#   WEIR_REQUIRE_ALL=1    no test may skip for want of data, a server or a tool (as under CI)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${WEIR_SKIP_INSTALL:-}" ]; then
  echo "== scripts/install-test-deps.sh"
  scripts/install-test-deps.sh
fi
# The kafka tests' broker, where the install script builds it.
export PATH="$PATH:/var/tmp/tansu/bin"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (unit tests and the end-to-end suite)"
cargo test --workspace --locked --no-fail-fast
