#!/usr/bin/env bash
# A Docker daemon for CI that leaves the host's network as found, started and stopped by PID.
#
#   .ci/dockerd.sh start   installs docker.io when missing (apt-get, --no-install-recommends),
#                          starts dockerd, waits until it answers; prints DOCKER_HOST=... (eval
#                          it, or use `.ci/dockerd.sh env`)
#   .ci/dockerd.sh stop    stops that dockerd by its PID (SIGTERM, then SIGKILL after 60 s),
#                          and the containerd it started; removes its run directory
#   .ci/dockerd.sh env     prints `export DOCKER_HOST=unix://...` for a started daemon
#
# By default dockerd adds a docker0 bridge, iptables nat/filter tables and sets
# net.ipv4.ip_forward=1, all of which stay after it stops: here it runs with
# --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false, so
# containers need `--network none` (each still gets a network namespace of its own) and the
# host's links, tables and sysctls are untouched. Its socket, pidfile and exec-root are its own
# (/run/pysockopt-ci-docker), so it never meets a system dockerd's. The data-root is Docker's
# default, /var/lib/docker (pysockopt reads container names from there, as on users' hosts),
# unless DOCKER_DATA_ROOT says otherwise; a dockerd already using it is refused. Images there
# are kept between runs (a cache); containers are the caller's to remove.
set -euo pipefail
RUN_DIR=${PYSOCKOPT_DOCKER_RUN:-/run/pysockopt-ci-docker}
DATA_ROOT=${DOCKER_DATA_ROOT:-/var/lib/docker}
SOCK=$RUN_DIR/docker.sock
PIDFILE=$RUN_DIR/dockerd.pid
LOG=$RUN_DIR/dockerd.log

docker_cli() {  # Debian's client (docker.io), else the one on PATH
  if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker; fi
}

case "${1:-}" in
  start)
    if ! command -v dockerd >/dev/null; then
      echo "+ apt-get install docker.io"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      # no service may start from the package's scripts (there may be no init system)
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      apt-get install -y -qq --no-install-recommends docker.io >/dev/null
      rm -f /usr/sbin/policy-rc.d
    fi
    if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "DOCKER_HOST=unix://$SOCK"; exit 0   # already ours and running
    fi
    for p in $(pgrep -x dockerd || true); do
      if tr '\0' ' ' < "/proc/$p/cmdline" | grep -q -- "--data-root[= ]$DATA_ROOT\b" \
         || { [ "$DATA_ROOT" = /var/lib/docker ] && ! tr '\0' ' ' < "/proc/$p/cmdline" | grep -q -- --data-root; }; then
        echo "dockerd.sh: dockerd $p already uses $DATA_ROOT; set DOCKER_DATA_ROOT" >&2; exit 1
      fi
    done
    mkdir -p "$RUN_DIR" "$DATA_ROOT"
    # setsid: its own session, so a Ctrl-C or hangup of the caller does not reach it
    setsid dockerd --host "unix://$SOCK" --pidfile "$PIDFILE" --exec-root "$RUN_DIR/exec" \
      --data-root "$DATA_ROOT" --bridge=none --iptables=false --ip6tables=false \
      --ip-forward=false --ip-masq=false --userland-proxy=false \
      >"$LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" > "$RUN_DIR/started.pid"
    cli=$(docker_cli)
    for _ in $(seq 120); do
      if DOCKER_HOST=unix://$SOCK "$cli" version >/dev/null 2>&1; then
        echo "DOCKER_HOST=unix://$SOCK"; exit 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    echo "dockerd.sh: dockerd did not answer; its log:" >&2
    tail -30 "$LOG" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
    ;;
  stop)
    pid=$(cat "$RUN_DIR/started.pid" 2>/dev/null || cat "$PIDFILE" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      # the containerd it started (docker.io without a system containerd) is its child
      children=$(pgrep -P "$pid" || true)
      kill -TERM "$pid"
      for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
      for c in $children; do
        for _ in $(seq 40); do kill -0 "$c" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$c" 2>/dev/null; then kill -KILL "$c" 2>/dev/null || true; fi
      done
    fi
    # a mount the daemon left in its exec-root (netns, plugins) would keep the directory busy
    for m in $(findmnt -rn -o TARGET | grep "^$RUN_DIR/" | sort -r); do umount "$m" || true; done
    rm -rf "$RUN_DIR"
    ;;
  env)
    echo "export DOCKER_HOST=unix://$SOCK"
    ;;
  *)
    echo "usage: .ci/dockerd.sh start|stop|env" >&2
    exit 2
    ;;
esac
