#!/bin/sh
# Installs the Debian packages named on the command line that are not installed yet. make
# calls it for tools that only the tests and benchmarks use (redis-tools, curl, nginx, wrk,
# redis-server); asyncd itself needs none of them. It never fails the build: a package it
# cannot install is reported, and the tests that need it say they were skipped and why.
missing=""
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    echo "ensure-packages: not root and no sudo; install them yourself:$missing" >&2
    exit 0
fi

echo "ensure-packages: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# A fresh image may have no package lists yet: update once if the first try fails.
if ! $sudo apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1; then
    $sudo apt-get update -q >/dev/null 2>&1
    $sudo apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 ||
        echo "ensure-packages: could not install$missing; the tests that need them will be skipped" >&2
fi
# Debian starts services it installs; the benchmarks start their own, on their own ports.
for svc in redis-server nginx; do
    case " $missing " in *" $svc "*)
        $sudo service "$svc" stop >/dev/null 2>&1 || true ;;
    esac
done
exit 0
