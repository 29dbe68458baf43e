#!/usr/bin/env bash
# The load generator against oha, on the same trivial endpoint, side by side.
#
#   benchmarks/generator-vs-oha.sh            # 64 connections, 10 s per run
#   CONNECTIONS=128 DURATION=5 benchmarks/generator-vs-oha.sh
#
# What it does:
#   1. installs oha once into .wiber/cache/oha (git-ignored) with `cargo install --locked`
#      (--locked: oha's own lockfile, so a newer dependency cannot need a newer rustc);
#   2. starts nginx (one worker, from a temp dir, 127.0.0.1 only) answering
#      `POST /messages` like the API: a 201 with a small JSON body;
#   3. closed loop, same connection count and duration: oha, wiberctl bench --max,
#      oha, wiberctl (alternating, so drift in the machine's load hits both), and the
#      ratio of the means;
#   4. open loop with bench's defaults: `bench --rate 5000 --duration 20s`.
#
# Why nginx and not a Rust server of our own: it is the endpoint the first measurement
# used (oha 1.16 at 69-76k req/s), it costs nothing to build, and neither tool gets an
# endpoint tuned for it. One worker keeps it to one of our two cores.
#
# Every run holds /tmp/wiber-bench.lock (shared with everyone on the machine) and is
# short; nothing is compiled while it is held. Needs: cargo, python3, nginx (installed
# with apt-get when missing and run as root).
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10}
PORT=${PORT:-18089}
RATE=${RATE:-5000}
RATE_DURATION=${RATE_DURATION:-20}
LOCK=/tmp/wiber-bench.lock

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# --- tools ------------------------------------------------------------------------------
git check-ignore -q .wiber/cache/oha || {
  echo "error: .wiber/ is not git-ignored here; add it to .gitignore first" >&2
  exit 2
}
oha=$root/.wiber/cache/oha/bin/oha
if [[ ! -x $oha ]]; then
  echo "installing oha into .wiber/cache/oha (once)..."
  cargo install oha --locked --root .wiber/cache/oha
fi
if ! command -v nginx >/dev/null; then
  [[ $(id -u) == 0 ]] || { echo "error: nginx is missing: apt-get install -y nginx (as root)" >&2; exit 2; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y nginx
fi
echo "building wiberctl (release)..."
cargo build --release -p wiberctl
wiberctl=$root/target/release/wiberctl

# --- the trivial endpoint ---------------------------------------------------------------
tmp=$(mktemp -d /tmp/wiber-vs-oha.XXXXXX)
nginx_pid=
cleanup() {
  [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/body"
cat >"$tmp/nginx.conf" <<EOF
worker_processes 1;
error_log $tmp/error.log warn;
pid $tmp/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/body;
  # Both tools keep their connections for the whole run (nginx would close each after
  # 1,000 requests by default, and reconnecting is not what is measured here).
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  server {
    listen 127.0.0.1:$PORT;
    location = /messages {
      default_type application/json;
      return 201 '{"messageId":"m","timestamp":1700000000000}';
    }
    location = /health/liveness { return 200 'ok'; }
  }
}
EOF
nginx -p "$tmp" -c "$tmp/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 50); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health/liveness" 2>/dev/null && break
  sleep 0.1
done
if ! kill -0 "$nginx_pid" 2>/dev/null; then
  nginx_pid=
  echo "error: nginx did not start (is 127.0.0.1:$PORT in use? ss -ltnp; or set PORT=...)" >&2
  exit 2
fi
url=http://127.0.0.1:$PORT

# The body oha sends: what bench sends at --size 256 (same keys, a 256-byte content).
content=$(printf 'r0:0:0|%0249d' 0 | tr 0 q)
body="{\"fromUser\":\"bench-r0-u0a\",\"toUser\":\"bench-r0-u0b\",\"content\":\"$content\",\"messageId\":\"r0-c0-s000000000\"}"

# Each run under the machine-wide lock, its CPU seconds (user + sys, GNU time) in $tmp/cpu,
# its stderr in $tmp/err; a failed run says why (GNU time names a killing signal).
locked_timed() {
  if ! flock "$LOCK" /usr/bin/time -f '%U %S' -o "$tmp/cpu" "$@" 2>"$tmp/err"; then
    echo "error: $(basename "$1") failed: $(cat "$tmp/cpu")" >&2
    cat "$tmp/err" >&2
    exit 2
  fi
}
cores() { awk -v d="$1" 'END { printf "%.2f", ($1 + $2) / d }' "$tmp/cpu"; }

run_oha() {
  locked_timed "$oha" --no-tui --output-format json -z "${DURATION}s" -c "$CONNECTIONS" \
    -m POST -H 'content-type: application/json' -d "$body" "$url/messages" >"$tmp/oha.json"
  python3 -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["summary"]["requestsPerSec"])' "$tmp/oha.json"
}

run_wiberctl() {
  locked_timed "$wiberctl" --api-url "$url" --json bench --max --duration "${DURATION}s" \
    --conversations "$CONNECTIONS" --connections "$CONNECTIONS" --size 256 --no-e2e \
    --reports-dir "$tmp/reports" --name vs-oha >"$tmp/wiberctl.json"
  python3 -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["achieved_rate"])' "$tmp/wiberctl.json"
}

# --- closed loop, side by side ----------------------------------------------------------
echo
echo "closed loop against nginx (1 worker) POST /messages, $CONNECTIONS connections, ${DURATION}s each"
oha_runs=()
wib_runs=()
for round in 1 2; do
  r=$(run_oha)
  oha_runs+=("$r")
  echo "  round $round  oha                    $r req/s  (oha CPU $(cores "$DURATION") cores)"
  r=$(run_wiberctl)
  wib_runs+=("$r")
  echo "  round $round  wiberctl bench --max   $r ok/s   (wiberctl CPU $(cores "$DURATION") cores)"
done
python3 - "${oha_runs[@]}" "${wib_runs[@]}" <<'EOF'
import sys
v = [float(x) for x in sys.argv[1:]]
oha, wib = v[:2], v[2:]
mo, mw = sum(oha) / 2, sum(wib) / 2
print(f"  mean: oha {mo:.0f} req/s, wiberctl {mw:.0f} ok/s: wiberctl / oha = {mw / mo:.2f}")
EOF

# --- open loop with the defaults --------------------------------------------------------
echo
echo "open loop with bench's defaults: --rate $RATE --duration ${RATE_DURATION}s"
flock "$LOCK" "$wiberctl" --api-url "$url" --json bench --rate "$RATE" --duration "${RATE_DURATION}s" \
  --no-e2e --reports-dir "$tmp/reports" --name rate >"$tmp/rate.json"
python3 - "$tmp/rate.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"  goodput {s['achieved_rate']:.1f} ok/s of {s['target_rate']:.0f} "
      f"({100 * s['achieved_rate'] / s['target_rate']:.1f}%), not started {s['not_started']}, "
      f"ack p50 {s['ack_ms']['p50']} ms p99 {s['ack_ms']['p99']} ms, "
      f"start delay p99 {s['start_delay_ms']['p99']} ms, "
      f"peak in flight {s.get('peak_in_flight')} of {s.get('in_flight_cap')}, "
      f"generator-bound {s.get('generator_bound')}")
for w in s["warnings"]:
    print(f"  warning: {w}")
EOF
