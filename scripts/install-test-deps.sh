#!/usr/bin/env bash
# System packages and Python clients that the test suites use. Idempotent; quiet when all is present.
set -euo pipefail
need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
command -v fio >/dev/null || need_apt+=(fio)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# kafka-python compresses with optional packages: python-snappy (snappy), lz4 (lz4), zstandard (zstd).
python3 - <<'PY' || pip install -q pytest confluent-kafka kafka-python python-snappy lz4 zstandard
import importlib.util, sys
modules = ("pytest", "confluent_kafka", "kafka", "snappy", "lz4", "zstandard")
missing = [name for name in modules if importlib.util.find_spec(name) is None]
sys.exit(1 if missing else 0)
PY
