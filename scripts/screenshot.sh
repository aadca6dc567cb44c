#!/usr/bin/env bash
# A PNG of a local HTML page as headless Chromium draws it: no driver package, no server, no network. Used by
# scripts/demo_figures.sh (fig/memory_browser.png) and tests/test_memory_browser.py.
#
# Usage:   scripts/screenshot.sh PAGE.html OUT.png [WIDTH [HEIGHT]]     (CSS pixels, default 1400 x 1000)
# Needs Debian's `chromium` package (`apt-get install -y chromium`; .ci/run installs it when absent), or any
# Chrome/Chromium named by CHROMIUM=/path. It runs with a fresh profile (removed afterwards), without the sandbox
# (needed as root), the GPU, background networking, component updates or sync, at device scale factor 1 so that
# one CSS pixel is one pixel of the PNG. Chromium's own log goes to stderr only when it fails.
set -euo pipefail
if (( $# < 2 )); then
    echo "usage: $0 PAGE.html OUT.png [WIDTH [HEIGHT]]" >&2
    exit 2
fi
page=$1 out=$2 width=${3:-1400} height=${4:-1000}
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [[ -z $browser ]]; then
    echo "error: no Chromium found: apt-get install -y chromium (Debian), or set CHROMIUM=/path/to/chrome" >&2
    exit 2
fi
[[ -f $page ]] || { echo "error: $page: no such file" >&2; exit 2; }
profile=$(mktemp -d "${TMPDIR:-/tmp}/screenshot.XXXXXX")
trap 'rm -rf "$profile"' EXIT
out=$(realpath -m "$out")
rm -f "$out"
if ! "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --hide-scrollbars --force-device-scale-factor=1 \
        --user-data-dir="$profile" --window-size="$width,$height" --screenshot="$out" \
        "file://$(realpath "$page")" > "$profile/log" 2>&1 || [[ ! -s $out ]]; then
    cat "$profile/log" >&2
    echo "error: $browser wrote no screenshot of $page" >&2
    exit 1
fi
