#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh machine, then runs every test suite.
# Usage: scripts/test.sh            (everything)
#        scripts/test.sh --long     (also the long runs: SLUICE_LONG=1, e.g. test_replication.py's 20 leader kills)
#        SLUICE_SKIP_INSTALL=1 scripts/test.sh   (when the system packages are known to be present)
set -euo pipefail
cd "$(dirname "$0")/.."

for argument in "$@"; do
  case "$argument" in
    --long) export SLUICE_LONG=1 ;;
    *) echo "usage: scripts/test.sh [--long]" >&2; exit 2 ;;
  esac
done

step() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

if [ "${SLUICE_SKIP_INSTALL:-0}" != 1 ]; then
  step "installing test dependencies"
  scripts/install-test-deps.sh
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy -j2 --workspace --all-targets -- -D warnings

step "cargo test (unit, property, crash-consistency, real-file and process tests)"
cargo test -j2 --workspace --release -- --test-threads=2

if [ -d broker/tests/clients ]; then
  step "real-client tests"
  # --tests: the same feature set as `cargo test` above, so nothing is rebuilt (-p sluice-broker alone would
  # resolve features differently and rebuild glommio and the broker, minutes on two cores).
  cargo build -j2 --release --workspace --tests
  python3 -m pytest -q broker/tests/clients
fi

# Each client's basic scenarios and librdkafka's smoke set; the first run also builds librdkafka's test suite
# (~100 s, cached in target/compat/). The whole set is scripts/compat.sh --full.
step "compatibility: other people's clients and tests (scripts/compat.sh --fast)"
scripts/compat.sh --fast
step "all tests passed"
