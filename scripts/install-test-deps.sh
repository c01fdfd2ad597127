#!/usr/bin/env bash
# Installs what the tests need: Debian packages, Python packages, the tansu Kafka broker, the
# tracefs mount and the rustfmt/clippy components. Idempotent: each item is checked first, so
# a run with everything present installs nothing and takes about a second.
#
# Run by scripts/test.sh before the tests (set WEIR_SKIP_INSTALL=1 to skip it), or by hand:
#   scripts/install-test-deps.sh
#
# As root (CI is) it installs everything. Without root it installs what a user can (Python
# packages with --user, tansu under /var/tmp, rustup components) and lists what it cannot,
# with the command to run; the tests that need a missing item then skip with a message, except
# under CI (`CI` or `WEIR_REQUIRE_ALL` set), where this script fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

# Under CI a missing item is an error (the tests would fail on it anyway, later and less
# clearly); on a developer machine it is a warning.
required=0
case "${CI:-}" in "" | 0 | false) ;; *) required=1 ;; esac
[ -n "${WEIR_REQUIRE_ALL:-}" ] && required=1

say() { echo "install-test-deps: $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
# Runs a command as root: directly when root, else through passwordless sudo if there is one.
as_root() {
  if is_root; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    return 1
  fi
}
can_root() { is_root || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; }

# What could not be installed: one line each, with the command that would install it.
not_installed=()

# ---------------------------------------------------------------------------------------------
# Debian packages.
need_apt=()
want_cmd() { # want_cmd COMMAND PACKAGE: PACKAGE provides COMMAND
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || need_apt+=("$2")
}
want_file() { # want_file PATH PACKAGE
  [ -e "$1" ] || need_apt+=("$2")
}
want_cmd cc gcc
want_cmd pkg-config pkg-config
# The Prometheus sinks' end-to-end tests write to and are scraped by a real Prometheus and
# VictoriaMetrics.
want_cmd prometheus prometheus
want_cmd victoria-metrics victoria-metrics
# The NATS source and sink end-to-end tests run a real nats-server with JetStream.
want_cmd nats-server nats-server
# The Kubernetes packaging is rendered by `kubectl kustomize` (Debian's kubectl; any kubectl
# already installed does, the manifests are written for kustomize v2 to v5).
want_cmd kubectl kubernetes-client
# The kafka source and sink: rdkafka builds librdkafka from source (make, a C compiler; TLS and
# SCRAM against the system OpenSSL).
want_cmd make make
want_file /usr/include/openssl/ssl.h libssl-dev
# TLS tests make their certificates with the openssl CLI.
want_cmd openssl openssl
# The perf source's end-to-end tests record programs with the machine's perf.
want_cmd perf linux-perf
# Python: DuckDB/pyarrow read the parquet sink's files, a real OpenTelemetry SDK talks to the
# otlp source, kubernetes-validate checks the manifests.
want_cmd python3 python3
# eBPF: clang/llvm rebuild the committed objects to check they are up to date.
want_cmd clang clang
want_cmd llvm-strip llvm
want_cmd llvm-objdump llvm
want_file /usr/include/bpf/bpf_helpers.h libbpf-dev
# host_metrics' login records are cross-checked with `who` (coreutils) and `last` (util-linux
# up to Debian 12; both essential there).
want_cmd who coreutils
want_cmd last util-linux
# The ebpf_tcp test's peers are perl scripts (perl-base is essential; listed for minimal images).
want_cmd perl perl-base
# The web console's browser test (tests/it/console.rs) drives headless Chromium over the
# DevTools protocol.
want_cmd chromium chromium
# pip itself, when python3 has none.
if command -v python3 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
  need_apt+=(python3-pip)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  # One package may be wanted for two commands (llvm): install each once.
  mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
  if can_root; then
    say "apt-get install ${need_apt[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    not_installed+=("Debian packages ${need_apt[*]}: sudo apt-get install ${need_apt[*]}")
  fi
fi

# ---------------------------------------------------------------------------------------------
# Python packages (for python3 as found on PATH: the tests run that one).
pip_install() {
  local args=(-q) out
  # Not root and not in a virtualenv: the user's site-packages.
  if ! is_root && [ -z "${VIRTUAL_ENV:-}" ]; then args+=(--user); fi
  if out=$(python3 -m pip install "${args[@]}" "$@" 2>&1); then return 0; fi
  # Debian's python3 refuses pip installs outside a virtualenv (PEP 668) unless told.
  if grep -q externally-managed <<<"$out"; then
    python3 -m pip install "${args[@]}" --break-system-packages "$@" && return 0
  else
    echo "$out" >&2
  fi
  return 1
}
# module to import -> the pip packages that provide it (several modules may share a set).
py_missing() {
  python3 - "$@" <<'EOF'
import importlib, sys
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
    except Exception:
        print(m)
EOF
}
if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
  missing=$(py_missing duckdb pyarrow opentelemetry.sdk opentelemetry.exporter.otlp.proto.grpc \
    opentelemetry.exporter.otlp.proto.http opentelemetry.proto grpc kubernetes_validate)
  pip_want=()
  case "$missing" in *duckdb* | *pyarrow*) pip_want+=(duckdb pyarrow) ;; esac
  case "$missing" in *opentelemetry* | *grpc*)
    pip_want+=(opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc
      opentelemetry-exporter-otlp-proto-http opentelemetry-proto grpcio) ;;
  esac
  # kubernetes-validate ships the Kubernetes JSON schemas: validation itself needs no network.
  case "$missing" in *kubernetes_validate*) pip_want+=(kubernetes-validate) ;; esac
  if [ ${#pip_want[@]} -gt 0 ]; then
    say "pip install ${pip_want[*]}"
    pip_install "${pip_want[@]}" || not_installed+=("Python packages ${pip_want[*]}: python3 -m pip install ${pip_want[*]}")
  fi
else
  not_installed+=("Python packages (no python3 with pip to install them with)")
fi

# ---------------------------------------------------------------------------------------------
# tansu, the Kafka-API broker the kafka tests run. Built once per machine outside the clone
# (about 13 minutes on 2 cores); the tests find it on PATH or in /var/tmp/tansu/bin.
TANSU_ROOT=/var/tmp/tansu
if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$TANSU_ROOT/bin/tansu" ]; then
  if mkdir -p "$TANSU_ROOT" 2>/dev/null && [ -w "$TANSU_ROOT" ]; then
    say "cargo install tansu into $TANSU_ROOT (once per machine: about 13 minutes on 2 cores)"
    tansu_install() {
      CARGO_TARGET_DIR="$TANSU_ROOT/target" cargo install tansu --version 0.6.0 \
        --features dynostore --root "$TANSU_ROOT" "$@"
    }
    tansu_install --locked || tansu_install || not_installed+=("tansu: cargo install failed (see above)")
  else
    not_installed+=("tansu: $TANSU_ROOT is not writable: cargo install tansu --version 0.6.0 --features dynostore --root $TANSU_ROOT")
  fi
fi

# ---------------------------------------------------------------------------------------------
# ebpf_tcp attaches to syscalls:* tracepoints, which need tracefs.
# (/proc/self/mounts, not the directory: a non-root user may not read /sys/kernel/tracing.)
if ! awk '$3 == "tracefs" { found = 1 } END { exit !found }' /proc/self/mounts; then
  as_root mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null \
    || not_installed+=("tracefs (the ebpf_tcp tests): sudo mount -t tracefs tracefs /sys/kernel/tracing")
fi

# ---------------------------------------------------------------------------------------------
# rustfmt and clippy, for `cargo fmt --check` and `cargo clippy`.
if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup component list --installed 2>/dev/null || true)
  for c in rustfmt clippy; do
    grep -q "^$c" <<<"$installed" || rustup component add "$c" \
      || not_installed+=("the $c component: rustup component add $c")
  done
else
  for c in rustfmt clippy; do
    cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || not_installed+=("$c (no rustup to add it with)")
  done
fi

# ---------------------------------------------------------------------------------------------
if [ ${#not_installed[@]} -gt 0 ]; then
  if is_root; then why="it failed"; else why="not root and no passwordless sudo"; fi
  say "could not install ($why):"
  for l in "${not_installed[@]}"; do say "  - $l"; done
  if [ "$required" = 1 ]; then
    say "under CI (CI or WEIR_REQUIRE_ALL set) every test must run: failing"
    exit 1
  fi
  say "the tests that need these will say SKIPPED (or fail where there is no skip)"
fi
