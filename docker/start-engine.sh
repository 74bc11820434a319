#!/usr/bin/env bash
# Start a Docker engine when none answers, the way this project's machines need it:
# no bridge network and no iptables rules (containers run with --network host,
# listening on 127.0.0.1). Installs docker.io with apt when missing (as root).
#
#   docker/start-engine.sh            # no-op when an engine already answers
#
# Environment: DOCKERD_LOG (default /var/log/lfs-server-dockerd.log),
#              DOCKERD_WAIT seconds to wait for the socket (default 60).
# The engine keeps running afterwards; stop it by the PID this script prints.
set -euo pipefail

LOG="${DOCKERD_LOG:-/var/log/lfs-server-dockerd.log}"
WAIT="${DOCKERD_WAIT:-60}"
export PATH="$PATH:/usr/sbin:/sbin"

# Debian's client (/usr/bin/docker) has BuildKit built in; prefer it.
if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER="$(command -v docker || true)"; fi

engine_answers() {
  [ -n "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1
}

if engine_answers; then
  echo "start-engine: a Docker engine is already running"
  exit 0
fi

# Builds need a BuildKit-capable client: Debian's /usr/bin/docker (docker.io) has it
# built in, while a bare client elsewhere on PATH may lack buildx.
if ! command -v dockerd >/dev/null 2>&1 || [ ! -x /usr/bin/docker ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "start-engine: dockerd is missing: install the Debian package docker.io (as root)" >&2
    exit 1
  fi
  echo "start-engine: installing docker.io with apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  DOCKER=/usr/bin/docker
fi

if [ "$(id -u)" != 0 ]; then
  echo "start-engine: no Docker engine answers and starting one needs root" >&2
  exit 1
fi

mkdir -p "$(dirname "$LOG")"
# setsid: the engine outlives this script and the test run that called it.
setsid dockerd --bridge=none --iptables=false --ip6tables=false >>"$LOG" 2>&1 </dev/null &
pid=$!
echo "start-engine: started dockerd (pid $pid, log $LOG)"

for _ in $(seq 1 $((WAIT * 4))); do
  if engine_answers; then
    echo "start-engine: the engine answers"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start-engine: dockerd exited during start-up; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  sleep 0.25
done
echo "start-engine: dockerd (pid $pid) did not answer within ${WAIT}s; see $LOG" >&2
exit 1
