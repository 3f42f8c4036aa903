#!/usr/bin/env bash
# CI's VM stage: the kernel-facing tests on Debian's 6.1 and 6.12 cloud kernels (what users run),
# each booted under qemu with a Debian bookworm userland; the project is built inside the VM and
# the tests run there as root. KVM where the CPU shows vmx/svm, else TCG (`-accel tcg,thread=multi
# -cpu max`: this CI host's /dev/kvm comes from kvm_pvm and boots no stock kernel).
#
#   .ci/kernel-vm.sh [KERNEL_PACKAGE...]   default: linux-image-cloud-amd64 (6.1) and
#                                           linux-image-6.12-cloud-amd64 (6.12)
#
# Everything is cached under $PYSOCKOPT_CI_CACHE (default /var/cache/pysockopt-ci): the rootfs
# and its image (rebuilt when .ci/vm/run-on-kernel.sh's rootfs inputs change), the wheelhouse and
# venv (per pyproject.toml), the kernel .debs and their initramfs. From nothing: ~6 min of setup
# (network: Debian mirror, PyPI); cached: ~2 min per kernel plus the tests.
#
# The subset (KERNEL_VM_TESTS): what differs between kernels, i.e. the tests that talk to the
# kernel: tcp_info layouts, sock_diag dumps, /proc parsing, namespaces, diagnosis, keepalive
# limits, errno, the sampler, reentrancy of the C core; `-m "not slow"`. The CLI, live view and
# watch are Python over these same calls: they run on the host (tests and stress stages).
# Each kernel's pytest summary (failures, skips with reasons) is printed; any failure, or a VM
# that never reports, fails the stage.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${PYSOCKOPT_CI_CACHE:-/var/cache/pysockopt-ci}
export KERNEL_VM_DIR=$CACHE/kernel-vm
DEBS=$CACHE/kernel-debs
mkdir -p "$DEBS" "$KERNEL_VM_DIR"
export PYTEST_ARGS=${PYTEST_ARGS:-"-q -rfEs -m 'not slow' ${KERNEL_VM_TESTS:-tests/test_tcpinfo.py tests/test_netlink.py tests/test_connections.py tests/test_namespaces.py tests/test_diagnose.py tests/test_sample.py tests/test_keepalive.py tests/test_errno.py tests/test_reentry.py tests/test_closed.py}"}
export VM_TIMEOUT=${VM_TIMEOUT:-1500} PYTEST_TIMEOUT=${PYTEST_TIMEOUT:-1200}
# 6G: the parser's 4 GiB-mapping test needs the guest to allow such a mapping (4G: ENOMEM);
# qemu allocates the guest's memory as it is touched.
export VM_MEM=${VM_MEM:-6G}
start=$SECONDS

# kernel_deb META: the .deb of the kernel META depends on, downloaded into $DEBS once.
kernel_deb() {
  local meta=$1 pkg deb
  pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-/{print $2; exit}')
  fi
  deb=$(ls "$DEBS/${pkg}_"*.deb 2>/dev/null | tail -1 || true)
  if [ -z "$deb" ]; then
    (cd "$DEBS" && { apt-get download -q "$pkg" >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get download -q "$pkg" >/dev/null; }; })
    deb=$(ls "$DEBS/${pkg}_"*.deb | tail -1)
  fi
  echo "$deb"
}

# root's git must accept a checkout owned by someone else (a CI clone may be): said to git
# through its environment (like -c), so no config file of the host's changes
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0="$PWD"

if [ $# -eq 0 ]; then set -- linux-image-cloud-amd64 linux-image-6.12-cloud-amd64; fi
status=0
summary=()
for meta in "$@"; do
  deb=$(kernel_deb "$meta")
  echo "+ VM: $(basename "$deb"): pytest $PYTEST_ARGS"
  t0=$SECONDS
  for attempt in 1 2; do
    rc=0
    bash .ci/vm/run-on-kernel.sh "$deb" . > "$CACHE/vm-last.log" 2>&1 || rc=$?
    run=$(ls -dt "$KERNEL_VM_DIR"/runs/*/ | head -1)
    # 3 without a line of the job's: the VM never came up (a boot that failed); once more
    if [ "$rc" -ne 3 ] || [ -s "$run/out/console.log" ] || [ "$attempt" -eq 2 ]; then break; fi
    echo "--- the VM did not boot (attempt $attempt); its console's end:"
    tail -c 1500 "$run/serial.log" 2>/dev/null | tr -d '\r' | tail -15 || true
  done
  # qemu's serial console carries boot noise; the job's own output is what matters
  if [ -s "$run/out/console.log" ]; then
    cat "$run/out/console.log"
  else
    echo "--- no job output; the last 60 lines of the stage log:"
    tail -60 "$CACHE/vm-last.log"
  fi
  grep '^\[run-on-kernel' "$CACHE/vm-last.log" || true
  line=$(grep -E '(passed|failed|errors?|skipped).* in [0-9.]+s' "$run/out/console.log" 2>/dev/null | tail -1 || true)
  summary+=("$(basename "$deb" .deb): rc=$rc, $((SECONDS - t0)) s in all: ${line:-no pytest summary}")
  [ "$rc" -eq 0 ] || status=1
  # keep the last 4 runs' results; job images are removed by run-on-kernel.sh
  ls -dt "$KERNEL_VM_DIR"/runs/*/ | tail -n +5 | xargs -r rm -rf
done
echo "=== VM stage ($((SECONDS - start)) s):"
printf '  %s\n' "${summary[@]}"
exit $status
