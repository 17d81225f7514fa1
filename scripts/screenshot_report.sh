#!/usr/bin/env bash
# Render a report (pipeline.report.write_report) to a PNG with headless Chromium.
#   bash scripts/screenshot_report.sh REPORT_DIR OUT.png
# Environment: CHROMIUM (browser binary; default: chromium on PATH), WINDOW_SIZE (default
# 1280,2400), SCREENSHOT_TIMEOUT (seconds, default 120). Debian: apt-get install -y chromium.
# No network: the report is a static file:// page, and the flags switch off Chromium's
# background traffic. A throwaway profile keeps runs independent.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 REPORT_DIR OUT.png" >&2
  exit 2
fi
report_dir=$1
out=$2
if [ ! -f "$report_dir/index.html" ]; then
  echo "error: no $report_dir/index.html; write the report first (pipeline.report.write_report)" >&2
  exit 2
fi
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [ -z "$browser" ] || ! [ -x "$browser" ]; then
  echo "error: no Chromium found; apt-get install -y chromium, or set CHROMIUM=/path/to/browser" >&2
  exit 127
fi

url=$(python3 -c 'import pathlib, sys; print(pathlib.Path(sys.argv[1]).resolve().as_uri())' \
  "$report_dir/index.html")
out_abs=$(python3 -c 'import pathlib, sys; print(pathlib.Path(sys.argv[1]).resolve())' "$out")
mkdir -p "$(dirname "$out_abs")"
rm -f "$out_abs"

profile=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$profile" "$log"' EXIT

status=0
timeout "${SCREENSHOT_TIMEOUT:-120}" "$browser" \
  --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" \
  --screenshot="$out_abs" --window-size="${WINDOW_SIZE:-1280,2400}" \
  "$url" >"$log" 2>&1 || status=$?

if [ "$status" -ne 0 ] || [ ! -s "$out_abs" ]; then
  echo "error: Chromium (exit $status) wrote no screenshot at $out_abs; its output:" >&2
  cat "$log" >&2
  exit 1
fi
echo "$out_abs"
