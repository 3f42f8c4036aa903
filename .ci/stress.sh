#!/usr/bin/env bash
# CI stage: the root and kernel-facing tests once more on a busy host. A CPU hog
# (`stress-ng --cpu 2`, Debian's, installed when missing) runs at the tests' own priority, and a
# foreign network namespace is present: a named one (ip netns) and one known only by its
# process (unshare -n), each holding sockets, as other work on a real host would. Everything
# it starts is stopped by PID and the namespace it made removed, whatever happened.
#
#   .ci/stress.sh [extra pytest arguments]       PYTHON: the interpreter (default: python),
#                                               with the project and its test extra installed
#
# The tests: every `-m "not slow"` test of the kernel-facing files (TCP_INFO, sock_diag and
# /proc, namespaces, diagnosis, sampling, keepalive, errno, reentrancy, the CLI, live and watch),
# and every root test elsewhere (integrations against real servers, the exporter, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
KERNEL_FACING=(tests/test_tcpinfo.py tests/test_netlink.py tests/test_connections.py
  tests/test_namespaces.py tests/test_live.py tests/test_diagnose.py tests/test_sample.py
  tests/test_keepalive.py tests/test_errno.py tests/test_reentry.py tests/test_cli.py
  tests/test_watch.py)

if ! command -v stress-ng >/dev/null; then
  echo "+ apt-get install stress-ng"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends stress-ng >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends stress-ng >/dev/null; }
fi

tag=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
ns=pso-foreign-$tag
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT

# A foreign namespace with a listener and a few connections (one of them in CLOSE_WAIT), and
# an unnamed one: the tests must not count on there being none.
HOLD='
import socket, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(16)
cs = [socket.create_connection(l.getsockname()) for _ in range(4)]
ss = [l.accept()[0] for _ in range(4)]
cs[0].close()
time.sleep(86400)'
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" "$python" -c "$HOLD" & pids+=($!)
unshare -n sh -c 'ip link set lo up; exec "$0" -c "$1"' "$python" "$HOLD" & pids+=($!)

stress-ng --cpu 2 --timeout 3600s --quiet & pids+=($!)
sleep 1
echo "+ stress-ng --cpu 2 (pid ${pids[2]}), foreign namespaces: $ns and pid ${pids[1]}'s; load: $(cut -d' ' -f1-3 /proc/loadavg)"

status=0
t0=$SECONDS
echo "+ pytest -m 'not slow' on the kernel-facing tests"
"$python" -m pytest -q -rfEs -p no:cacheprovider -m "not slow" "${KERNEL_FACING[@]}" \
  "$@" || status=$?
ignore=()
for f in "${KERNEL_FACING[@]}"; do ignore+=(--ignore="$f"); done
echo "+ pytest -m 'root and not slow' on the other tests"
"$python" -m pytest -q -rfEs -p no:cacheprovider -m "root and not slow" "${ignore[@]}" \
  --ignore=tests/test_containers.py "$@" || { rc=$?; [ "$rc" -eq 5 ] || status=$rc; }
echo "stress.sh: $((SECONDS - t0)) s of tests under load (load now: $(cut -d' ' -f1-3 /proc/loadavg)), status $status"
exit $status
