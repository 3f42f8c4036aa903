#!/usr/bin/env bash
# System packages the tests use, installed only when missing (CI runs as root on a clean
# machine; only the package registries are reachable). Each test starts the servers it needs
# itself, on loopback with a temp dir and a non-default port, and stops them by PID.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }
have ip || need+=(iproute2)
have ss || need+=(iproute2)
have nsenter || need+=(util-linux)
have unshare || need+=(util-linux)                   # namespaces known only by pid
have setpriv || need+=(util-linux)                   # PostgreSQL in a test namespace, as a user
have openssl || need+=(openssl)                      # a self-signed cert for the TLS clients
have useradd || need+=(passwd)                       # an unprivileged user for EPERM tests
have nft || need+=(nftables)                         # conntrack counting in a test namespace
have tmux || need+=(tmux)                            # the live view, in a real terminal
have redis-server || need+=(redis-server)            # integrations: redis-py
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)  # libpq clients
have prometheus || need+=(prometheus)                # the exporter, scraped for real
have promtool || need+=(prometheus)
have prometheus-node-exporter || need+=(prometheus-node-exporter)
have gcc || need+=(gcc)
have stdbuf || need+=(coreutils)                     # ss -E line-buffered (test_closed)
have git || need+=(git)                              # pythons.sh copies the tracked files
# a venv of Debian's python3 (.ci/run, each stage) and the headers the C core builds against
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
python3 -c 'import os, sysconfig; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' \
  >/dev/null 2>&1 || need+=(python3-dev)

if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "+ apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Packages with services must not try to start them here (no init system in CI).
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
