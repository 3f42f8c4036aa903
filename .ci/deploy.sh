#!/usr/bin/env bash
# CI stage: the exporter as fleets run it (docs/deploy.md), all for real:
#   1. the systemd units verified (systemd-analyze verify: any word it says fails the stage);
#   2. the DaemonSet validated against Kubernetes's schemas, offline (kubernetes-validate);
#   3. tests/test_deploy.py and tests/test_exporter_service.py: uid 65534 with exactly the
#      capability set sees what root sees (setpriv), the dashboard's every query answered by
#      a real Prometheus scraping a real exporter, bounded scrapes;
#   4. the image: built with docker FROM a local debootstrap image (.ci/image.sh; no registry),
#      run as a DaemonSet runs it (host PID and network, read-only, only the three
#      capabilities, non-root), scraped, compared with state_counts() on a staged namespace.
# Runs as root on a clean machine; installs what it needs (apt, pip); leaves the host as found
# (dockerd stopped by PID, its data root removed, links / nft / ip_forward compared).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start=$SECONDS
work=$(mktemp -d /tmp/pysockopt-deploy.XXXXXX)
stage() { echo "+ [deploy $((SECONDS - start)) s] $*"; }
docker=/usr/bin/docker   # Debian's client (docker.io, with .ci/dockerd.sh's daemon)
export PYSOCKOPT_DOCKER_RUN=/run/pysockopt-ci-docker-deploy   # this stage's own daemon
export DOCKER_DATA_ROOT=/var/lib/pysockopt-ci-docker-deploy
data_root_existed=0; [ -e "$DOCKER_DATA_ROOT" ] && data_root_existed=1
netns=pso-deploy-ci-$$
holder= cid= dockerd=0
cleanup() {
  set +e
  [ -n "$cid" ] && $docker rm -f "$cid" >/dev/null 2>&1
  [ -n "$holder" ] && kill "$holder" 2>/dev/null && wait "$holder" 2>/dev/null
  ip netns del "$netns" 2>/dev/null
  [ "$dockerd" = 1 ] && bash "$root/.ci/dockerd.sh" stop
  [ "$data_root_existed" = 0 ] && rm -rf "$DOCKER_DATA_ROOT"
  rm -rf "$work"
}
trap cleanup EXIT

need=()
command -v systemd-analyze >/dev/null || need+=(systemd)   # only the tools: no systemd-sysv
command -v setpriv >/dev/null || need+=(util-linux)
command -v prometheus >/dev/null || need+=(prometheus)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v gcc >/dev/null || need+=(gcc python3-dev)
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  stage "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # no service may start from a package's scripts (there is no init system here)
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# A venv of the machine's python3 with the project and the deploy-test extra.
stage "venv: pip install -e '.[prometheus,deploy-test]' pytest"
python3 -m venv "$work/venv"
py=$work/venv/bin/python
{ "$py" -m pip install -q --upgrade pip \
  && "$py" -m pip install -q -e "$root[prometheus,deploy-test]" pytest hypothesis; } \
  > "$work/pip.log" 2>&1 || { cat "$work/pip.log"; exit 1; }
"$py" -c 'import pysockopt._native, prometheus_client, kubernetes_validate'

stage "systemd-analyze verify docs/deploy/*.service *.timer"
units=$work/units
mkdir -p "$units"
cp docs/deploy/*.service docs/deploy/*.timer "$units/"
# The units name /opt/pysockopt/bin/pysockopt (docs/deploy.md); verify checks it exists.
sed -i "s|/opt/pysockopt/bin/pysockopt|$work/venv/bin/pysockopt|" "$units"/*.service
said=$(cd "$units" && systemd-analyze verify --man=no ./*.service ./*.timer 2>&1) || {
  echo "$said"; exit 1; }
if [ -n "$said" ]; then echo "$said"; echo "systemd-analyze verify: the units are not clean" >&2; exit 1; fi
echo "units verified (no systemd as PID 1 here: verifying the units and running the exporter"
echo "with their user and capabilities, tests/test_deploy.py, is the proof)"

stage "kubernetes-validate --strict docs/deploy/daemonset.yaml"
"$work/venv/bin/kubernetes-validate" --strict docs/deploy/daemonset.yaml

stage "pytest tests/test_deploy.py tests/test_exporter_service.py"
"$py" -m pytest -q -p no:cacheprovider -rfEs tests/test_deploy.py tests/test_exporter_service.py

# --- the image, with a Docker daemon of this stage's own
before=$work/host-before
snapshot() {
  { ip -o link show | sed 's/ state .*//' | awk '{print $2}' | sort
    nft list tables 2>/dev/null | sort
    cat /proc/sys/net/ipv4/ip_forward; } > "$1"
}
snapshot "$before"
stage ".ci/dockerd.sh start (its own run directory and data root)"
dockerd=1
eval "$(bash .ci/dockerd.sh start | sed 's/^/export /')"
stage ".ci/image.sh docker (the base: a debootstrap rootfs)"
base=$(bash .ci/image.sh docker)
echo "base image: $base"
ctx=$work/context
mkdir -p "$ctx"
git ls-files -z | xargs -0 tar -c | tar -x -C "$ctx"
# pip in the build trusts what the host's pip trusts (a TLS-intercepting proxy's CA, if any)
cert=$(python3 -m pip config get global.cert 2>/dev/null || true)
cert=${PIP_CERT:-${cert:-/etc/ssl/certs/ca-certificates.crt}}
pip_args=()
if [ -s "$cert" ]; then
  cp "$cert" "$ctx/ci-ca-certificates.crt"
  pip_args=(--build-arg PIP_CERT=/src/ci-ca-certificates.crt)
fi
stage "docker build -f docs/deploy/Dockerfile --build-arg BASE=$base"
DOCKER_BUILDKIT=0 $docker build -q --network host --build-arg "BASE=$base" "${pip_args[@]}" \
  -f "$ctx/docs/deploy/Dockerfile" -t pysockopt-exporter:ci "$ctx"

# A staged namespace (held by a root process) the container must see into, owners included.
ip netns add "$netns"
ip -n "$netns" link set lo up
ip netns exec "$netns" python3 -c '
import socket, sys
l = socket.create_server(("127.0.0.1", 7000))
held = []
for i in range(3):  # CLOSE_WAIT: the client closed, the server never does
    c = socket.create_connection(("127.0.0.1", 7000)); a, _ = l.accept(); c.close(); held.append(a)
for i in range(5):
    c = socket.create_connection(("127.0.0.1", 7000)); a, _ = l.accept(); held += [c, a]
print("ready", flush=True)
sys.stdin.read()' > "$work/holder.out" < <(sleep 600) &
holder=$!
for _ in $(seq 100); do grep -q ready "$work/holder.out" && break; sleep 0.1; done
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
stage "docker run --pid=host --network=host --read-only --cap-drop=ALL + 3 capabilities"
cid=$($docker run -d --pid=host --network=host --read-only --cap-drop=ALL \
  --cap-add=SYS_ADMIN --cap-add=SYS_PTRACE --cap-add=DAC_READ_SEARCH \
  -v /run/netns:/run/netns:ro,rslave pysockopt-exporter:ci \
  exporter --all-netns --listen "127.0.0.1:$port")
"$py" - "$port" "$netns" "$cid" "$docker" <<'EOF'
import subprocess, sys, time, urllib.request
from prometheus_client.parser import text_string_to_metric_families
from pysockopt import state_counts
from pysockopt.host.namespaces import current_namespace
from pysockopt.prometheus import STATE_LABELS

port, netns, cid, docker = sys.argv[1:5]
deadline = time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
            text = r.read().decode()
        break
    except OSError:
        if time.monotonic() > deadline:
            print(subprocess.run([docker, "logs", cid], capture_output=True,
                                 text=True).stderr)
            raise
        time.sleep(0.5)
got = {}
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        got[(s.name, tuple(sorted(s.labels.items())))] = s.value
ours = {dict(k[1])["state"]: v for k, v in got.items()
        if k[0] == "pysockopt_tcp_sockets" and ("netns", netns) in k[1]}
theirs = {STATE_LABELS[st]: n for st, n in state_counts(netns=netns).items() if n}
print(f"container scrape: {len(got)} series; netns {netns}: {dict((k, v) for k, v in ours.items() if v)}")
print(f"state_counts(netns={netns}): {theirs}")
assert {k: v for k, v in ours.items() if v} == theirs, (ours, theirs)
owners = {dict(k[1])["owner"]: v for k, v in got.items()
          if k[0] == "pysockopt_tcp_close_wait_owner_sockets" and ("netns", netns) in k[1]}
print(f"CLOSE_WAIT owners seen from the container: {owners}")
assert owners == {"python3": 3}, owners
# The host's own namespace moves (other work runs here): said side by side, not compared.
here = current_namespace().label
host = {STATE_LABELS[st]: n for st, n in state_counts().items() if n}
seen = {dict(k[1])["state"]: int(v) for k, v in got.items()
        if k[0] == "pysockopt_tcp_sockets" and ("netns", here) in k[1] and v}
print(f"host namespace ({here}): container {seen}; state_counts() now {host}")
logs = subprocess.run([docker, "logs", cid], capture_output=True, text=True)
said = logs.stdout + logs.stderr
print("container said:", said.strip().replace("\n", " | "))
assert "without CAP_" not in said, said
pid = subprocess.run([docker, "inspect", "-f", "{{.State.Pid}}", cid], capture_output=True,
                     text=True, check=True).stdout.strip()
with open(f"/proc/{pid}/status") as f:
    status = dict(line.split(":", 1) for line in f if ":" in line)
uids, caps = status["Uid"].split(), int(status["CapEff"], 16)
named = {bit: name for name, bit in (("CAP_SYS_ADMIN", 21), ("CAP_SYS_PTRACE", 19),
                                     ("CAP_DAC_READ_SEARCH", 2))}
held = [named.get(b, f"bit {b}") for b in range(64) if caps >> b & 1]
print(f"container process {pid}: uid {uids[0]}, effective capabilities {held}")
assert set(uids) == {"65534"}, uids
assert sorted(held) == sorted(named.values()), held
EOF
stage "stop and clean up"
$docker rm -f "$cid" >/dev/null; cid=
kill "$holder"; wait "$holder" 2>/dev/null || true; holder=
ip netns del "$netns"
bash .ci/dockerd.sh stop; dockerd=0
[ "$data_root_existed" = 0 ] && rm -rf "$DOCKER_DATA_ROOT"
snapshot "$work/host-after"
if ! diff -u "$before" "$work/host-after"; then
  echo "deploy: the host's links, nft tables or ip_forward changed" >&2; exit 1
fi
echo "host links, nft tables and ip_forward as found"
echo "deploy stage took $((SECONDS - start)) s"
