#!/usr/bin/env bash
# Installs what lighthousefs needs on Debian: system packages, a virtualenv in .venv
# with the package and its test tools, and `lighthouse` on the PATH. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES="fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv redis-server redis-tools bindfs git systemd util-linux openssl"
missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  echo "install.sh: installing$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# The Debian package starts a system Redis; lighthousefs's tests start their own.

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"

if [ -w /usr/local/bin ] || [ -n "$SUDO" ]; then
  $SUDO ln -sf "$PWD/.venv/bin/lighthouse" /usr/local/bin/lighthouse
fi
echo "install.sh: ready ($(.venv/bin/lighthouse --help >/dev/null && echo lighthouse ok))"
