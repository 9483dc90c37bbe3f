#!/usr/bin/env bash
# System packages and Python clients that the test suites use. Idempotent; quiet when all is present.
set -euo pipefail
need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
command -v fio >/dev/null || need_apt+=(fio)
# scripts/compat.sh: building librdkafka's test suite (with zstd and lz4, so its compression tests run),
# rdkafka_performance against the system librdkafka (kcat's), and KafkaJS.
command -v gcc >/dev/null || need_apt+=(build-essential)
command -v npm >/dev/null || need_apt+=(nodejs npm)
for package in libssl-dev zlib1g-dev libzstd-dev liblz4-dev librdkafka1; do
  dpkg -s "$package" >/dev/null 2>&1 || need_apt+=("$package")
done
# `apt-get source librdkafka` (Debian's librdkafka 2.0.2 for rdkafka_performance) needs a deb-src entry.
deb_src=/etc/apt/sources.list.d/sluice-deb-src.sources
need_update=0
if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  echo "adding a deb-src entry for $codename ($deb_src)"
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$codename" >"$deb_src"
  need_update=1
fi
if [ ${#need_apt[@]} -gt 0 ] || [ "$need_update" = 1 ]; then
  [ ${#need_apt[@]} -gt 0 ] && echo "apt-get install ${need_apt[*]}"
  apt-get update -qq
  [ ${#need_apt[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# kafka-python compresses with optional packages: python-snappy (snappy), lz4 (lz4), zstandard (zstd).
# aiokafka (scripts/compat.sh) brings its own codecs (cramjam).
python3 - <<'PY' || pip install -q pytest confluent-kafka kafka-python python-snappy lz4 zstandard aiokafka
import importlib.util, sys
modules = ("pytest", "confluent_kafka", "kafka", "snappy", "lz4", "zstandard", "aiokafka")
missing = [name for name in modules if importlib.util.find_spec(name) is None]
sys.exit(1 if missing else 0)
PY
