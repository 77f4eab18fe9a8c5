#!/usr/bin/env bash
# Screenshot a zsim report with headless Chromium (Debian package `chromium`).
# Usage: reports/screenshot.sh REPORT_DIR_OR_HTML [OUT.png] [HEIGHT_PX]
set -euo pipefail
src="${1:?usage: reports/screenshot.sh REPORT_DIR_OR_HTML [OUT.png] [HEIGHT_PX]}"
[ -d "$src" ] && src="$src/report.html"
out="${2:-${src%.html}.png}"
height="${3:-6000}"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "screenshot.sh: no chromium found (apt-get install -y chromium)" >&2; exit 2; }
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# Flags: headless without a sandbox (root in CI) and without background network traffic.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1200,"$height" \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$src")" >/dev/null 2>&1
echo "wrote $out"
