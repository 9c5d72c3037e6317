#!/usr/bin/env bash
# System packages the tests need, installed where we may (root, or passwordless sudo):
# Debian's chromium for the map page's browser tests (driven by Playwright; never a browser
# that Playwright downloads), and PostgreSQL with PostGIS for the PostgreSQL store tests
# (tests/pgserver.py starts a throwaway server). Without them those tests skip and say why.
set -euo pipefail
shopt -s nullglob
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
initdb=(/usr/lib/postgresql/*/bin/initdb)
[ ${#initdb[@]} -gt 0 ] || missing+=(postgresql)
postgis=(/usr/share/postgresql/*/extension/postgis.control)
[ ${#postgis[@]} -gt 0 ] || missing+=(postgresql-15-postgis-3)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    apt_get=(env DEBIAN_FRONTEND=noninteractive apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt_get=(sudo -n env DEBIAN_FRONTEND=noninteractive apt-get)
else
    echo "warning: ${missing[*]} missing and apt-get needs root or sudo; their tests will skip" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: ${missing[*]} missing and there is no apt-get; their tests will skip" >&2
    exit 0
fi
echo "installing Debian's ${missing[*]} for the tests"
if ! { "${apt_get[@]}" update -qq &&
    "${apt_get[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "warning: could not install ${missing[*]}; their tests will skip" >&2
fi
