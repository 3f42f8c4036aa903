#!/usr/bin/env bash
# CI stage: real Docker and Podman containers (tests/test_containers.py).
#
# Installs docker.io and podman when missing (apt-get, --no-install-recommends), builds the
# local image from a debootstrap rootfs (.ci/image.sh; cached under /var/cache/pysockopt-ci),
# starts a dockerd that leaves the host's network alone (.ci/dockerd.sh: no bridge, iptables or
# forwarding; its own socket, pidfile and exec-root) and stops it by PID at the end, whatever
# happened. Podman runs rootful with a containers.conf of this stage's (cgroupfs, file events:
# a host without systemd). Then runs the tests, which start containers with `--network none`
# holding a CLOSE_WAIT pile. The host's links, nft ruleset, iptables tables and forwarding
# sysctls are compared before and after: any difference fails the stage.
#
#   .ci/containers.sh [extra pytest arguments]      PYTHON: the interpreter (default: python)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${PYSOCKOPT_CI_CACHE:-/var/cache/pysockopt-ci}
python=${PYTHON:-python}
mkdir -p "$CACHE"

snapshot() {
  ip -o link | sed 's/^[0-9]*: //; s/ state .*//' | sort
  nft list ruleset 2>/dev/null || true
  if command -v iptables-save >/dev/null; then iptables-save 2>/dev/null | grep -v '^#' || true; fi
  sysctl -a 2>/dev/null | grep -E '^net\.ipv[46]\.(ip_forward|conf\.all\.forwarding) ' || true
}
before=$(snapshot)

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v podman >/dev/null || need+=(podman)
if [ ${#need[@]} -gt 0 ]; then
  echo "+ apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

export CONTAINERS_CONF=$CACHE/containers.conf
printf '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' > "$CONTAINERS_CONF"

status=0
trap 'bash .ci/dockerd.sh stop' EXIT
echo "+ .ci/dockerd.sh start"
eval "export $(bash .ci/dockerd.sh start)"
echo "+ .ci/image.sh docker; .ci/image.sh podman"
PYSOCKOPT_TEST_IMAGE=$(bash .ci/image.sh docker)
[ "$(bash .ci/image.sh podman)" = "$PYSOCKOPT_TEST_IMAGE" ]
export PYSOCKOPT_TEST_IMAGE
echo "dockerd $(dockerd --version), $(podman --version), image $PYSOCKOPT_TEST_IMAGE"

echo "+ pytest tests/test_containers.py"
"$python" -m pytest -v -rfEs -p no:cacheprovider tests/test_containers.py "$@" || status=$?

bash .ci/dockerd.sh stop
trap - EXIT
# the containers are gone (each test removes its own)
left=$(podman ps -aq --filter name=pso-test- 2>/dev/null || true)
if [ -n "$left" ]; then echo "containers.sh: podman containers left: $left"; status=1; fi
after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "containers.sh: the host's network changed:"
  diff <(echo "$before") <(echo "$after") || true
  status=1
else
  echo "containers.sh: host links, nft/iptables tables and forwarding sysctls as found"
fi
exit $status
