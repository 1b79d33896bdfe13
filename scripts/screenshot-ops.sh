#!/usr/bin/env bash
# The operator page in a real browser: starts `relay serve` (built-in simulator) on a free port, sends the
# sample alerts (one of them made to fail for good, so the dead-letter queue has a message), and takes a
# headless Chromium screenshot of /ops into docs/operator-page.png (or $1).
#
#   scripts/screenshot-ops.sh [OUT.png]      RELAY_BIN=target/debug/relay by default
#
# Needs Debian's chromium (`apt-get install -y chromium`); exits 0 with a clear message when it is absent.
# The read token travels as the password of HTTP Basic authentication (user `ops`), as a browser sends it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${1:-docs/operator-page.png}
chromium=${CHROMIUM:-/usr/bin/chromium}
relay=${RELAY_BIN:-$root/target/debug/relay}
if [ ! -x "$chromium" ]; then
  echo "screenshot-ops: SKIPPED: $chromium not found (apt-get install -y chromium)" >&2
  exit 0
fi
if [ ! -x "$relay" ]; then
  echo "screenshot-ops: $relay not found; build it first: cargo build -p relay" >&2
  exit 1
fi
for tool in curl python3; do command -v "$tool" >/dev/null || { echo "screenshot-ops: $tool needed" >&2; exit 1; }; done

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

env -u RELAY_WEBHOOK_SECRET -u RELAY_READ_TOKEN -u RELAY_SERVICENOW_FILE -u SERVICENOW_INSTANCE_URL \
  RELAY_LOG=warn "$relay" serve --port 0 --db "$work/data/relay.db" --retry-window-seconds 60 \
  >"$work/banner" 2>"$work/stderr" &
pid=$!
for _ in $(seq 1 200); do grep -qx ready "$work/banner" 2>/dev/null && break; sleep 0.1; done
grep -qx ready "$work/banner" || { echo "screenshot-ops: relay serve did not start" >&2; cat "$work/stderr" >&2; exit 1; }
url=$(awk '/listening/ {print $2; exit}' "$work/banner")
sim=$(awk '/built-in simulator at/ {print $5; exit}' "$work/banner")

# Realistic latencies, then one security incident the instance refuses for good (400: dead-lettered).
curl -fsS -X POST "$sim/sim/faults" -H 'content-type: application/json' \
  -d '{"kind": {"type": "latency", "ms": 400}, "count": 3, "method": "POST"}'
curl -fsS -X POST "$sim/sim/faults" -H 'content-type: application/json' \
  -d '{"kind": {"type": "server_error", "status": 400}, "count": 1, "table": "sn_si_incident", "method": "POST"}'
send() { "$relay" send --url "$url" --db "$work/data/relay.db" --wait 20 "$@" >/dev/null || true; }
send events/alerts/dlp-critical.json
for f in events/alerts/seed-usb-copy-847-files.json events/alerts/seed-after-hours-prod-db-admin.json \
         events/alerts/behavioral-anomaly-critical.json events/alerts/policy-violation-high.json \
         events/alerts/dlp-high.json events/alerts/custom-critical.json; do
  send "$f"
done

token=$(cat "$work/data/read-token")
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: 127.0.0.1' "$url/ops")
[ "$status" = 401 ] || { echo "screenshot-ops: /ops answered $status without the token (expected 401)" >&2; exit 1; }
curl -fsS -u "ops:$token" "$url/ops" -o "$work/ops.html"
grep -q '<h2>Queues</h2>' "$work/ops.html"

# The token goes in the URL's user info only for this throwaway server; chromium turns it into Basic auth.
page="${url/http:\/\//http://ops:$token@}/ops"
mkdir -p "$(dirname "$out")"
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$work/chromium" \
  --window-size=1280,1100 --screenshot="$work/ops.png" "$page" >/dev/null 2>"$work/chromium.log" \
  || { cat "$work/chromium.log" >&2; exit 1; }
test -s "$work/ops.png"
cp "$work/ops.png" "$out"
echo "screenshot-ops: $out ($(stat -c %s "$out") bytes)"
