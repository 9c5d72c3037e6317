#!/usr/bin/env bash
# System packages the tests need, installed where we may (root, or passwordless sudo):
# Debian's chromium for the map page's browser tests (driven by Playwright; never a browser
# that Playwright downloads). Without it those tests skip and say why.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    apt_get=(env DEBIAN_FRONTEND=noninteractive apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt_get=(sudo -n env DEBIAN_FRONTEND=noninteractive apt-get)
else
    echo "warning: chromium is missing and apt-get needs root or sudo; the browser tests will skip" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: chromium is missing and there is no apt-get; the browser tests will skip" >&2
    exit 0
fi
echo "installing Debian's chromium for the browser tests"
if ! { "${apt_get[@]}" update -qq &&
    "${apt_get[@]}" install -y -qq --no-install-recommends chromium >/dev/null; }; then
    echo "warning: could not install chromium; the browser tests will skip" >&2
fi
