#!/bin/sh
# promtool, for the test that checks /metrics with it: Debian's prometheus package ships it.
# The package is unpacked into DIR (default build/tools), not installed, so that no
# Prometheus server is set up or started. Never fails the build: without it the test says it
# was skipped, and the parser test of our own still runs.
dir=${1:-build/tools}
[ -x "$dir/promtool" ] && exit 0
mkdir -p "$dir" || exit 0
if command -v promtool >/dev/null 2>&1; then
    ln -sf "$(command -v promtool)" "$dir/promtool"
    exit 0
fi
tmp=$(mktemp -d) || exit 0
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 0
if ! apt-get download prometheus >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1
    apt-get download prometheus >/dev/null 2>&1 ||
        { echo "fetch-promtool: could not download the prometheus package" >&2; exit 0; }
fi
dpkg-deb -x prometheus_*.deb x 2>/dev/null && [ -x x/usr/bin/promtool ] ||
    { echo "fetch-promtool: no promtool in the prometheus package" >&2; exit 0; }
cd - >/dev/null && cp "$tmp/x/usr/bin/promtool" "$dir/promtool"
