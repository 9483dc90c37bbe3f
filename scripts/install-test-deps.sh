#!/usr/bin/env bash
# System packages and Python clients that the test suites use, each at a fixed version. Idempotent; quiet when all
# is present. Everything comes through the machine's own package clients (apt, pip) and the sources they are
# configured with; this script names no host. The Node packages are pinned in compat/node/package-lock.json;
# scripts/compat.sh installs them with `npm ci` when it first needs them.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- Debian packages ----------------------------------------------------------------------------------------
# Pinned to Debian 12 (bookworm)'s versions, which do not change within the release unless Debian ships an update.
# Not pinned: libssl-dev (its version follows the security updates of libssl3, which the system already has at
# whatever version is current; a pin would either downgrade the system's OpenSSL or break at the next update) and
# nodejs (Debian's is updated by bookworm-security the same way; installed only when there is no npm at all).
# build-essential pins the metapackage; its gcc is whatever bookworm's gcc-12 is.
DEBIAN_PINS=(
  kcat=1.7.1-2              # kcat 1.7.1 on librdkafka 2.0.2: broker/tests/clients/test_kcat.py, compat librdkafka-2.0.2
  librdkafka1=2.0.2-1       # the system librdkafka that kcat and rdkafka_performance use
  fio=3.33-3                # disk limits (scripts/bench.sh)
  iperf3=3.12-1+deb12u2     # loopback limits and the CPU floor (scripts/bench.sh)
  libiperf0=3.12-1+deb12u2  # iperf3's library, at the same version
  zlib1g-dev=1:1.2.13.dfsg-1
  libzstd-dev=1.5.4+dfsg2-5 # librdkafka's test suite is built with zstd and lz4 so that its compression tests run
  liblz4-dev=1.9.4-1
)
# The source package scripts/compat.sh builds rdkafka_performance from (the same version as librdkafka1 above).
LIBRDKAFKA_SOURCE_VERSION=2.0.2-1
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")

need_apt=()
installed_version() { dpkg-query -W -f='${db:Status-Status} ${Version}' "$1" 2>/dev/null | sed -n 's/^installed //p'; }
for pin in "${DEBIAN_PINS[@]}"; do
  [ "$(installed_version "${pin%%=*}")" = "${pin#*=}" ] || need_apt+=("$pin")
done
# scripts/compat.sh: building librdkafka's test suite and rdkafka_performance (gcc, make), and KafkaJS (npm).
command -v gcc >/dev/null || need_apt+=(build-essential=12.9)
command -v npm >/dev/null || need_apt+=(nodejs npm=9.2.0~ds1-1)
[ -n "$(installed_version libssl-dev)" ] || need_apt+=(libssl-dev)

# `apt-get source librdkafka` (scripts/compat.sh) needs deb-src entries. They are derived from this machine's own
# apt sources: every enabled `deb` entry of this Debian release's suites (bookworm, bookworm-updates,
# bookworm-security, ...) gets a `deb-src` twin with the same URIs, suites, components and Signed-By, unless a
# deb-src entry for that URI and suite is already configured. Written to one file, rewritten only when the
# derivation changes.
deb_src=/etc/apt/sources.list.d/sluice-deb-src.sources
eval "$(apt-config shell SOURCE_LIST Dir::Etc::sourcelist/f SOURCE_PARTS Dir::Etc::sourceparts/d)"
wanted=$(python3 - "$codename" "$deb_src" "${SOURCE_LIST:-/etc/apt/sources.list}" "${SOURCE_PARTS:-/etc/apt/sources.list.d/}" <<'PY'
import glob, os, sys

codename, own_file, source_list, source_parts = sys.argv[1:5]
entries = []  # (types, uris, suites, components, signed_by lines)

def deb822(path):
    paragraph, last = {}, None
    lines = open(path, encoding="utf-8").read().splitlines() + [""]
    for line in lines:
        if line.startswith("#"):
            continue
        if not line.strip():
            if paragraph and paragraph.get("enabled", ["yes"])[0].strip().lower() != "no":
                field = lambda name: " ".join(paragraph.get(name, [""])).split()
                entries.append((field("types"), field("uris"), field("suites"), field("components"),
                                paragraph.get("signed-by")))
            paragraph, last = {}, None
        elif line[0] in " \t" and last:
            paragraph[last].append(line)
        elif ":" in line:
            name, value = line.split(":", 1)
            last = name.strip().lower()
            paragraph[last] = [value.strip()]

def one_line(path):
    for line in open(path, encoding="utf-8"):
        words = line.split("#", 1)[0].split()
        if len(words) < 3:
            continue
        kind, words = words[0], words[1:]
        signed_by = None
        if words[0].startswith("["):
            options = []
            while words:
                word = words.pop(0)
                options.append(word.strip("[]"))
                if word.endswith("]"):
                    break
            for option in options:
                if option.startswith("signed-by="):
                    signed_by = [option.split("=", 1)[1]]
        if len(words) >= 2:
            entries.append(([kind], [words[0]], [words[1]], words[2:], signed_by))

files = [source_list] + sorted(glob.glob(os.path.join(source_parts, "*.list")))
for path in files:
    if os.path.isfile(path):
        one_line(path)
for path in sorted(glob.glob(os.path.join(source_parts, "*.sources"))):
    if os.path.abspath(path) != os.path.abspath(own_file):
        deb822(path)

def ours(suite):
    return bool(codename) and (suite == codename or suite.startswith(codename + "-"))

have_source = {(uri.rstrip("/"), suite) for types, uris, suites, _, _ in entries if "deb-src" in types
               for uri in uris for suite in suites}
wanted = {}  # (uri, components, signed-by) -> suites, in the order of the configuration
for types, uris, suites, components, signed_by in entries:
    if "deb" not in types:
        continue
    for uri in uris:
        for suite in suites:
            if ours(suite) and (uri.rstrip("/"), suite) not in have_source:
                key = (uri, tuple(components), tuple(signed_by or ()))
                if suite not in wanted.setdefault(key, []):
                    wanted[key].append(suite)
paragraphs = []
for (uri, components, signed_by), suites in wanted.items():
    lines = ["Types: deb-src", f"URIs: {uri}", f"Suites: {' '.join(suites)}", f"Components: {' '.join(components)}"]
    if signed_by:
        lines.append("Signed-By: " + "\n".join(signed_by))
    paragraphs.append("\n".join(lines))
if paragraphs:
    print("# Written by Sluice's scripts/install-test-deps.sh: deb-src twins of this machine's own deb entries.\n")
    print("\n\n".join(paragraphs))
PY
)
need_update=0
if [ -n "$wanted" ]; then
  if [ "$(cat "$deb_src" 2>/dev/null)" != "$wanted" ]; then
    echo "writing deb-src entries derived from the machine's apt sources to $deb_src"
    printf '%s\n' "$wanted" >"$deb_src"
    need_update=1
  fi
elif [ -f "$deb_src" ]; then
  echo "removing $deb_src: the apt sources have their own deb-src entries"
  rm -f "$deb_src"
  need_update=1
fi
# The entries may be there without their indexes (a first run whose apt-get update failed, or entries added by hand).
have_librdkafka_source() { apt-cache showsrc librdkafka 2>/dev/null | grep -qx "Version: $LIBRDKAFKA_SOURCE_VERSION"; }
have_librdkafka_source || need_update=1

if [ ${#need_apt[@]} -gt 0 ] || [ "$need_update" = 1 ]; then
  [ ${#need_apt[@]} -gt 0 ] && echo "apt-get install ${need_apt[*]}"
  apt-get update -qq
  if [ ${#need_apt[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null \
      || { echo "apt-get install failed; the pinned versions are Debian 12 (bookworm)'s, this is ${codename:-unknown}" >&2
           exit 1; }
  fi
  have_librdkafka_source \
    || echo "warning: apt has no source package librdkafka $LIBRDKAFKA_SOURCE_VERSION; scripts/compat.sh librdkafka-2.0.2 will fail" >&2
fi

# --- Python packages ----------------------------------------------------------------------------------------
# broker/tests/clients/requirements.txt pins every package and what it pulls in. Installed into the python3 that
# runs the tests, only when one is missing or at another version (so a satisfied run touches no network).
requirements=broker/tests/clients/requirements.txt
python3 - "$requirements" <<'PY' || python3 -m pip install -q -r "$requirements"
import importlib.metadata, sys
wrong = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, version = line.split("==")
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != version:
        wrong.append(f"{name} {installed or 'missing'} (want {version})")
if wrong:
    print("pip install -r " + sys.argv[1] + ": " + ", ".join(wrong))
sys.exit(1 if wrong else 0)
PY
