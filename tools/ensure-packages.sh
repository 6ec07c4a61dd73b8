#!/bin/sh
# Install the Debian packages whose commands are missing: each argument is COMMAND:PACKAGE.
# As root, or with sudo without a password; otherwise say what is missing and go on (the
# tests that need it skip, saying why; the local cluster says what it cannot isolate).
PATH="$PATH:/usr/sbin:/sbin"
missing=""
for pair in "$@"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair#*:}"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else
  echo "missing:$missing (cannot install: not root and no password-less sudo)"; exit 0
fi
echo "installing:$missing"
$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
