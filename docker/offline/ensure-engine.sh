#!/usr/bin/env bash
# ensure-engine.sh — make sure a Docker engine answers on this machine.
#
# Our machines ship only the Docker *client*; no engine runs and no container
# registry is reachable. Debian's `docker.io` package does reach us (through apt),
# so: if `docker info` fails and no dockerd binary exists, install docker.io;
# if no engine answers, start dockerd in the background (log in
# $REPO/.wiber/dockerd.log) and wait, bounded, until it answers.
#
# Idempotent: when an engine already answers it does nothing and returns at once
# (it reports the engine's version and whether its userland proxy is on).
# The engine it starts keeps Docker's defaults, the userland proxy included: wiberctl's
# api container runs on the host's network, so no request of a load test crosses the
# proxy (see docker/README.md, "Performance"), and the stack behaves the same on this
# engine as on any engine a user already runs.
# Usable alone (CI calls it before anything that needs containers) and sourced
# by build.sh (it only defines functions and runs `ensure_engine` when executed).
#
# Environment:
#   WIBER_ENGINE_WAIT   seconds to wait for dockerd to answer (default 60)
#   REPO                repository root (default: two levels above this file)
set -euo pipefail

_ee_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${REPO:=$(cd "$_ee_here/../.." && pwd)}"

_ee_log() { printf '[ensure-engine] %s\n' "$*" >&2; }
_ee_die() {
  printf '[ensure-engine] ERROR: %s\n' "$1" >&2
  [ -n "${2:-}" ] && printf '[ensure-engine]   fix: %s\n' "$2" >&2
  exit 1
}

engine_answers() { docker info >/dev/null 2>&1; }

# Whether the engine copies published ports through docker-proxy (its default) or NATs
# them (--userland-proxy=false), from a local dockerd's command line or daemon.json.
# Only reported, never changed: an engine the user runs is theirs (and restarting it
# stops their containers). wiberctl keeps the proxy off the request path anyway: its api
# container uses the host's network. Prints on/off/unknown.
engine_userland_proxy() {
  local pid args
  pid="$(pidof dockerd 2>/dev/null | awk '{print $1}')" || true
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
    args="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    case " $args " in
      *" --userland-proxy=false "*|*" --userland-proxy false "*) echo off; return 0 ;;
      *" --userland-proxy=true "*|*" --userland-proxy true "*) echo on; return 0 ;;
    esac
    if [ -r /etc/docker/daemon.json ] && grep -Eq '"userland-proxy"[[:space:]]*:[[:space:]]*false' /etc/docker/daemon.json; then
      echo off; return 0
    fi
    echo on; return 0
  fi
  echo unknown
}

ensure_engine() {
  if engine_answers; then
    _ee_log "engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'), userland proxy: $(engine_userland_proxy))"
    return 0
  fi

  if ! command -v dockerd >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || _ee_die "no dockerd binary and not root: cannot install docker.io" \
      "run as root, or install Debian's docker.io package yourself"
    _ee_log "no dockerd: installing Debian's docker.io via apt (about 20 s)"
    local t0=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update is needed on a fresh machine (package lists may be empty or old).
    apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null ||
      _ee_die "step 'apt-get update' failed" "check the machine's apt sources and network to the Debian mirror"
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends docker.io >/dev/null ||
      _ee_die "step 'apt-get install docker.io' failed" "run 'apt-get install docker.io' by hand to see why"
    _ee_log "docker.io installed in $((SECONDS - t0)) s"
    # The package's own service start may already have brought an engine up.
    if engine_answers; then return 0; fi
  fi

  # docker.io's dockerd needs containerd; Debian ships it as a dependency, but on a
  # machine without systemd nobody starts it. dockerd starts its own managed
  # containerd when none is running, so we only start dockerd.
  command -v dockerd >/dev/null 2>&1 || _ee_die "dockerd still missing after install" \
    "check 'dpkg -L docker.io | grep bin/dockerd'"
  [ "$(id -u)" -eq 0 ] || _ee_die "dockerd must run as root here" "run this script as root"

  mkdir -p "$REPO/.wiber"
  local log="$REPO/.wiber/dockerd.log"
  _ee_log "starting dockerd in the background (log: $log)"
  local t0=$SECONDS
  # setsid + nohup: dockerd must outlive this script (and the shell that ran it).
  setsid nohup dockerd >>"$log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$REPO/.wiber/dockerd.pid"

  local wait_s="${WIBER_ENGINE_WAIT:-60}" i
  for ((i = 0; i < wait_s * 2; i++)); do
    if engine_answers; then
      _ee_log "dockerd (pid $pid) answers after $((SECONDS - t0)) s"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 20 "$log" >&2 || true
  _ee_die "dockerd did not answer within ${wait_s} s (pid $pid)" \
    "read $log; a stale /var/run/docker.pid or another dockerd may be in the way"
}

# Run only when executed, not when sourced by build.sh.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  ensure_engine
fi
