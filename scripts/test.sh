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

echo "== a minimal build: only the file source and the elasticsearch sink"
# Every component is a cargo feature; this build must compile alone and know only its two
# types. It runs before the tests, which rebuild the binary with every feature.
cargo build --locked -p weir --no-default-features --features sources-file,sinks-elasticsearch
minimal="${CARGO_TARGET_DIR:-target}/debug/weir"
listed=$("$minimal" list | awk '/^  / {print $1}' | sort | tr '\n' ' ')
expected="bytes elasticsearch file hubble_jsonpb json logfmt syslog "
if [ "$listed" != "$expected" ]; then
  echo "the minimal build lists [$listed], expected [$expected]" >&2
  exit 1
fi
minimal_config=$(mktemp --suffix=.toml)
trap 'rm -f "$minimal_config"' EXIT
cat >"$minimal_config" <<'TOML'
[api]
enabled = false
[sources.logs]
type = "file"
include = ["/var/log/*.log"]
[sinks.es]
type = "elasticsearch"
inputs = ["logs"]
endpoints = ["http://127.0.0.1:9200"]
TOML
"$minimal" validate --no-environment "$minimal_config"

echo "== cargo test (unit tests and the end-to-end suite)"
cargo test --workspace --locked --no-fail-fast
