#!/usr/bin/env bash
# run-on-kernel.sh KERNEL [REPO]
#
# Used by .ci/kernel-vm.sh (CI's VM stage), which passes Debian's cloud kernels and a test subset.
#
# Build pysockopt and run its checks and test suite inside a VM booted on another kernel
# (qemu: KVM where the CPU offers vmx/svm, else TCG emulation), with a Debian userland.
#
# Usage (as root):
#   run-on-kernel.sh linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb            # repo = cwd
#   PYTEST_ARGS='-q -rfEs -m "not slow" tests/test_tcpinfo.py' run-on-kernel.sh K.deb ~/src/pysockopt
#
#   KERNEL: a Debian linux-image-*.deb (its vmlinuz and modules are used; an initramfs is built),
#           or a bare vmlinuz (then INITRD=... and MODULES_DIR=... may be given; without an
#           initrd the kernel must have virtio_pci, virtio_blk and ext4 built in). The script
#           does not fetch kernels: take the .deb from a Debian mirror or snapshot.debian.org
#           (`apt-get download linux-image-<version>-cloud-amd64` on a Debian host).
#   REPO:   a git checkout of the project (default: the current directory; its top level is
#           used). Its HEAD is cloned, so uncommitted changes are NOT tested.
#
# Env: KERNEL_VM_DIR  work dir (default /var/cache/pysockopt-ci/kernel-vm). Use a path without spaces or commas (qemu -drive and
#                     debugfs -R split on them), on a filesystem that allows chroot and bind mounts.
#      PYTEST_ARGS (default "-q -rfEs": the whole suite), PYTEST_TIMEOUT (s, 6000),
#      VM_TIMEOUT (s, 7200), VM_MEM (4G), VM_CPUS (2), MIRROR (http://deb.debian.org/debian),
#      SUITE (bookworm), ACCEL (auto|kvm|tcg; auto: kvm where /dev/kvm is writable and the CPU
#      shows vmx/svm, else tcg), SSL_CERT_FILE (CA bundle for pip, default
#      /etc/ssl/certs/ca-certificates.crt), KEEP_JOB (non-empty: keep the run's job.img).
#
# Output: $KERNEL_VM_DIR/runs/<stamp>-<kernel version>/ with serial.log (the whole VM console)
# and out/ (console.log of the job, junit.xml, rc). Exit status: pytest's, from inside the VM;
# 3 when the VM never wrote one (did not boot, crashed, or hit VM_TIMEOUT).
#
# What it downloads, and what it caches under $KERNEL_VM_DIR/cache (a rerun reuses all of it):
#   - host packages, only if missing: qemu-system-x86, debootstrap, e2fsprogs, git (apt-get);
#   - rootfs/: Debian $SUITE minbase by debootstrap, with Python 3, gcc, iproute2, and the
#     servers the tests use (nftables, tmux, redis, PostgreSQL, Prometheus, node_exporter);
#     debs/ keeps the .debs. About 1.5 GB + 220 MB.
#   - base.img: an ext4 image of rootfs (6 GB sparse, ~1.5 GB used); the VM only ever writes
#     to a throwaway overlay (snapshot=on, kept in the run dir while qemu runs).
#   - wheelhouse-<hash>/ and venv-<hash>/: the project's dependencies from PyPI (pip, setuptools,
#     cffi, the [test] extra), and a venv with them, keyed by HEAD's pyproject.toml. ~60 + 250 MB.
#   - kernels/<deb name>/: the unpacked .deb, vmlinuz, initrd.img. ~50-270 MB per kernel.
#   Only the first run (and a run after pyproject.toml changes) needs the Debian mirror and
#   PyPI; the VM itself has no network. To rebuild the rootfs, delete cache/rootfs.
#
# Times measured (host: 2 AMD EPYC cores, no usable KVM, so TCG; VM: 2 vCPUs, 4G; Debian 12 host):
#   - from scratch: ~16 min in all (969 s). About 6 min of setup (debootstrap ~3 min, servers
#     ~1 min, base image 13 s, wheels ~1 min, venv 40 s, kernel + initramfs 8 s), then ~10 min in
#     the VM for a 707-test selection.
#   - cached rerun: ~3 min (186 s) in all, of which 72 s were a 38-test selection: about 2 min of
#     fixed cost (job disk 5 s, boot ~30 s, building the project in the VM ~1 min, smoke checks
#     ~10 s) plus the tests. A kernel not seen before adds ~10 s (unpack, initramfs).
#   - TCG is ~3-5x slower than native: the 707-test selection took 139 s natively on the host,
#     445 s in the VM on 6.12 (3.2x) and 662 s on 6.1 (4.8x).
#
# Pitfalls it handles:
#   - under TCG on a loaded host the kernel's early check of the IO-APIC timer can miss its
#     ticks and panic ("IO-APIC + timer doesn't work!"): booted with no_timer_check.
#   - KVM: a /dev/kvm without vmx/svm in /proc/cpuinfo (as on hosts whose /dev/kvm comes from
#     kvm_pvm, a PVM nested hypervisor) boots only guest kernels built for PVM, never a stock
#     Debian kernel (qemu aborts: "failed to set MSR 0x10a ... kvm_buf_set_msrs"), so ACCEL=auto
#     picks TCG there.
#   - pip in the chroot gets the host's CA bundle (PIP_CERT), since the host may reach PyPI
#     through a TLS proxy that a fresh rootfs does not trust (else CERTIFICATE_VERIFY_FAILED).
#   - mkinitramfs needs /boot/config-<kver> (it checks the kernel's CONFIG_RD_* for the
#     compression; else "gzip compression (CONFIG_RD_GZIP) not supported by kernel"): the .deb's
#     config is copied into the chroot for the build. The initramfs holds only virtio_pci,
#     virtio_blk and ext4, gzip-compressed (no zstd in the rootfs).
#   - services: apt runs in the chroot with a policy-rc.d that exits 101, so no daemon starts
#     on the host; in the image redis, PostgreSQL, Prometheus, node_exporter, the gettys (the
#     job writes to the serial console), e2scrub and apt-daily are masked, so besides systemd's
#     own units only ci-job.service runs. The VM powers off through systemctl --no-block (no
#     D-Bus there); -no-reboot and panic=-1 make a kernel panic end qemu.
#   - pip inside the VM takes minutes per step under TCG, so the dependency venv is built
#     natively in the chroot at the path the VM mounts it (/job/venv); only the project itself
#     (C core by cffi + gcc) is built inside the VM, on the guest's kernel and userland.
#   - results are read back from the job disk with debugfs rdump: no loop mount needed.
#   If interrupted during setup, bind mounts may remain under cache/rootfs (proc,
#   var/cache/apt/archives, job/venv, var/tmp/wh, lib/modules/<kver>): see `findmnt`, and
#   umount them before deleting the cache.
set -euo pipefail

KERNEL=${1:?usage: run-on-kernel.sh KERNEL_DEB_OR_VMLINUZ [REPO]}
[ -f "$KERNEL" ] || { echo "run-on-kernel.sh: no such kernel file: $KERNEL" >&2; exit 2; }
REPO_ARG=${2:-.}
W=${KERNEL_VM_DIR:-/var/cache/pysockopt-ci/kernel-vm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PYTEST_ARGS=${PYTEST_ARGS:--q -rfEs}
VM_TIMEOUT=${VM_TIMEOUT:-7200}
PYTEST_TIMEOUT=${PYTEST_TIMEOUT:-6000}
ACCEL=${ACCEL:-auto}
if [ "$ACCEL" = auto ]; then
  if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then ACCEL=kvm; else ACCEL=tcg; fi
fi
VM_MEM=${VM_MEM:-4G}
VM_CPUS=${VM_CPUS:-2}
mkdir -p "$W"
W=$(cd "$W" && pwd -P)
CACHE=$W/cache
ROOTFS=$CACHE/rootfs
BASE=$CACHE/base.img
KERNEL=$(realpath "$KERNEL")
start=$SECONDS
log() { echo "[run-on-kernel $((SECONDS - start))s] $*" >&2; }
mkdir -p "$CACHE/debs" "$W/runs"

# --- 0. host tools ------------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v debugfs >/dev/null || need+=(e2fsprogs)
command -v git >/dev/null || need+=(git)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
REPO=$(git -C "$REPO_ARG" rev-parse --show-toplevel) \
  || { echo "run-on-kernel.sh: REPO $REPO_ARG is not a git checkout (as seen by root's git)" >&2; exit 2; }

# in_root CMD...: run CMD in the rootfs, with proc and the apt cache bound in (services are
# never started: see policy-rc.d below)
in_root() {
  mount -t proc proc "$ROOTFS/proc"
  mount --bind "$CACHE/debs" "$ROOTFS/var/cache/apt/archives"
  local rc=0
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 \
    ${CHROOT_ENV:-} chroot "$ROOTFS" "$@" || rc=$?
  umount "$ROOTFS/var/cache/apt/archives"
  umount "$ROOTFS/proc"
  return $rc
}

# --- 1. root filesystem (once) ------------------------------------------------------------
# The VM's userland: Debian $SUITE, Python 3.11, a compiler, and what .ci/install.sh installs
# for the tests (iproute2, nftables, tmux, PostgreSQL, Redis, Prometheus, node_exporter).
ROOTFS_PKGS="systemd-sysv,udev,kmod,initramfs-tools,python3,python3-venv,python3-dev,gcc,libc6-dev,iproute2,git,procps,util-linux,passwd"
SERVER_PKGS="nftables tmux redis-server postgresql prometheus prometheus-node-exporter"
# The rootfs is rebuilt when what goes into it changes (this script's rootfs section, the suite).
ROOTFS_KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$ROOTFS_PKGS" "$SERVER_PKGS" \
  "$(sed -n '/^# --- 1\./,/^# --- 2\./p' "$0")" | sha256sum | cut -c1-16)
if [ "$(cat "$ROOTFS/.ci-done" 2>/dev/null)" != "$ROOTFS_KEY" ]; then
  # a setup that was interrupted may have left bind mounts in the old rootfs
  for m in $(findmnt -rn -o TARGET | grep "^$ROOTFS/" | sort -r); do umount "$m" || true; done
  log "debootstrap $SUITE into $ROOTFS"
  rm -rf "$ROOTFS"
  debootstrap --variant=minbase --cache-dir="$CACHE/debs" \
    --include="$ROOTFS_PKGS" \
    "$SUITE" "$ROOTFS" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log"; exit 1; }
  printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"
  chmod +x "$ROOTFS/usr/sbin/policy-rc.d"
  log "apt-get install test servers in the rootfs"
  # shellcheck disable=SC2086
  in_root apt-get install -y -qq --no-install-recommends $SERVER_PKGS >/dev/null
  rm -f "$ROOTFS/usr/sbin/policy-rc.d"
  echo ci-vm > "$ROOTFS/etc/hostname"
  cat > "$ROOTFS/etc/fstab" <<'EOF'
/dev/vda      /            ext4  rw,errors=remount-ro  0 0
/dev/vdb      /job         ext4  rw                    0 0
/job/modules  /lib/modules none  bind,x-systemd.requires-mounts-for=/job 0 0
EOF
  mkdir -p "$ROOTFS/job" "$ROOTFS/lib/modules" "$ROOTFS/opt/ci"
  # initramfs: just what finds the root disk; gzip (no zstd in the rootfs)
  sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' \
    "$ROOTFS/etc/initramfs-tools/initramfs.conf"
  printf 'virtio_pci\nvirtio_blk\next4\n' >> "$ROOTFS/etc/initramfs-tools/modules"
  # no services but the job; no getty on the serial console the job writes to
  for u in serial-getty@ttyS0 getty@tty1 redis-server postgresql postgresql@15-main prometheus \
           prometheus-node-exporter prometheus-node-exporter-apt prometheus-node-exporter-ipmitool-sensor \
           prometheus-node-exporter-smartmon prometheus-node-exporter-nvme \
           e2scrub_all e2scrub_reap apt-daily apt-daily-upgrade; do
    for kind in service timer; do ln -sf /dev/null "$ROOTFS/etc/systemd/system/$u.$kind"; done
  done
  cat > "$ROOTFS/etc/systemd/system/ci-job.service" <<'EOF'
[Unit]
Description=CI job from the job disk
RequiresMountsFor=/job /lib/modules
After=local-fs.target systemd-udev-settle.service
[Service]
Type=oneshot
ExecStart=/opt/ci/boot-job
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity
# A service gets 1024 descriptors by default; tests that hold thousands of sockets need more.
LimitNOFILE=524288
[Install]
WantedBy=multi-user.target
EOF
  ln -sf /etc/systemd/system/ci-job.service "$ROOTFS/etc/systemd/system/multi-user.target.wants/ci-job.service"
  cat > "$ROOTFS/opt/ci/boot-job" <<'EOF'
#!/bin/bash
# Runs /job/job.sh (from the job disk), keeps its exit status in /job/out/rc, powers off.
mkdir -p /job/out
echo "=== ci-job start $(date -u +%FT%TZ) kernel $(uname -r)"
# Not a pipe into tee: a process a test left behind would hold the pipe open and keep the VM
# up until VM_TIMEOUT. The job's status is known as soon as job.sh exits; poweroff ends the rest.
bash /job/job.sh > >(tee /job/out/console.log) 2>&1
echo "$?" > /job/out/rc
sleep 2
echo "=== ci-job end rc=$(cat /job/out/rc) $(date -u +%FT%TZ)"
sync
systemctl start --no-block poweroff.target   # not via logind (no D-Bus here)
EOF
  chmod +x "$ROOTFS/opt/ci/boot-job"
  echo "$ROOTFS_KEY" > "$ROOTFS/.ci-done"
  rm -f "$BASE"
fi

# --- 2. base disk image (once; the VM writes to a throwaway overlay, never to it) ----------
if [ ! -e "$BASE" ]; then
  log "mkfs.ext4 -d rootfs -> $BASE"
  mkfs.ext4 -q -F -L ci-root -d "$ROOTFS" "$BASE" 6G
fi

# --- 3. wheelhouse of the project's Python dependencies (per pyproject.toml) ---------------
# Downloaded with the VM's own interpreter (chroot), so every wheel fits it.
key=$(git -C "$REPO" show HEAD:pyproject.toml | sha256sum | cut -c1-12)
WHEELS=$CACHE/wheelhouse-$key
if [ ! -e "$WHEELS/.done" ]; then
  log "pip download the test dependencies -> $WHEELS"
  rm -rf "$WHEELS" "$ROOTFS/var/tmp/src" "$ROOTFS/var/tmp/wh" "$ROOTFS/var/tmp/dl"
  git clone -q "$REPO" "$ROOTFS/var/tmp/src"
  mkdir -p "$ROOTFS/var/tmp/wh"
  cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
  # the host's CA bundle (it may trust a TLS proxy the rootfs does not know)
  cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$ROOTFS/var/tmp/ca.crt"
  CHROOT_ENV="PIP_CERT=/var/tmp/ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1" in_root sh -c 'python3 -m venv /var/tmp/dl && /var/tmp/dl/bin/pip download -q -d /var/tmp/wh \
      pip "setuptools>=77" "cffi>=1.15" "/var/tmp/src[test]"'
  mv "$ROOTFS/var/tmp/wh" "$WHEELS"
  rm -rf "$ROOTFS/var/tmp/src" "$ROOTFS/var/tmp/dl" "$ROOTFS/var/tmp/ca.crt"
  touch "$WHEELS/.done"
fi

# --- 3b. a venv with every dependency (not the project), made natively in the chroot at the
# path the VM mounts it (/job/venv): under TCG, pip in the VM takes minutes per step.
VENV=$CACHE/venv-$key
if [ ! -e "$VENV/.done" ]; then
  log "venv with the test dependencies -> $VENV"
  rm -rf "$VENV" "$ROOTFS/var/tmp/src"; mkdir -p "$VENV" "$ROOTFS/job/venv" "$ROOTFS/var/tmp/wh"
  git clone -q "$REPO" "$ROOTFS/var/tmp/src"
  mount --bind "$VENV" "$ROOTFS/job/venv"; mount --bind "$WHEELS" "$ROOTFS/var/tmp/wh"
  rc=0
  CHROOT_ENV="PIP_NO_INDEX=1 PIP_FIND_LINKS=/var/tmp/wh PIP_DISABLE_PIP_VERSION_CHECK=1" in_root sh -c \
    'python3 -m venv /job/venv && /job/venv/bin/pip install -q -U pip && /job/venv/bin/pip install -q "setuptools>=77" "/var/tmp/src[test]" && /job/venv/bin/pip uninstall -q -y pysockopt' || rc=$?
  umount "$ROOTFS/var/tmp/wh" "$ROOTFS/job/venv"; rm -rf "$ROOTFS/var/tmp/src"; rmdir "$ROOTFS/var/tmp/wh"
  [ $rc -eq 0 ] || exit $rc
  touch "$VENV/.done"
fi

# --- 4. the kernel: vmlinuz, modules, initramfs (per kernel) ------------------------------
case "$KERNEL" in
  *.deb)
    KDIR=$CACHE/kernels/$(basename "$KERNEL" .deb)
    if [ ! -e "$KDIR/.done" ]; then
      log "unpack $(basename "$KERNEL")"
      rm -rf "$KDIR"; mkdir -p "$KDIR"
      dpkg-deb -x "$KERNEL" "$KDIR/x"
      KVER=$(basename "$(ls -d "$KDIR"/x/lib/modules/*)")
      mkdir -p "$ROOTFS/lib/modules/$KVER"
      mount --bind "$KDIR/x/lib/modules/$KVER" "$ROOTFS/lib/modules/$KVER"
      cp "$KDIR/x/boot/config-$KVER" "$ROOTFS/boot/"   # mkinitramfs reads it
      rc=0
      in_root sh -c "depmod -a $KVER && mkinitramfs -o /var/tmp/initrd.img $KVER" || rc=$?
      umount "$ROOTFS/lib/modules/$KVER"; rmdir "$ROOTFS/lib/modules/$KVER"
      rm -f "$ROOTFS/boot/config-$KVER"
      [ $rc -eq 0 ] || exit $rc
      mv "$ROOTFS/var/tmp/initrd.img" "$KDIR/initrd.img"
      cp "$KDIR/x/boot/vmlinuz-$KVER" "$KDIR/vmlinuz"
      echo "$KVER" > "$KDIR/version"
      touch "$KDIR/.done"
    fi
    KVER=$(cat "$KDIR/version"); VMLINUZ=$KDIR/vmlinuz; INITRD=$KDIR/initrd.img
    MODULES_DIR=$KDIR/x/lib/modules/$KVER
    ;;
  *)
    VMLINUZ=$KERNEL; INITRD=${INITRD:-}; MODULES_DIR=${MODULES_DIR:-}
    KVER=$(basename "${MODULES_DIR:-unknown}")
    ;;
esac

# --- 5. the job disk: project clone, wheelhouse, modules, job script ----------------------
RUN=$W/runs/$(date +%Y%m%d-%H%M%S)-$KVER
mkdir -p "$RUN/stage/out" "$RUN/stage/modules"
git clone -q "$REPO" "$RUN/stage/repo"
cp -r "$WHEELS" "$RUN/stage/wheelhouse"
cp -a "$VENV" "$RUN/stage/venv"
[ -z "$MODULES_DIR" ] || cp -a "$MODULES_DIR" "$RUN/stage/modules/"
cat > "$RUN/stage/job.sh" <<EOF
PYTEST_ARGS=$(printf %q "$PYTEST_ARGS") PYTEST_TIMEOUT=$PYTEST_TIMEOUT
EOF
cat >> "$RUN/stage/job.sh" <<'EOF'
# Runs inside the VM, as root, no network.
set -u
export HOME=/root LANG=C.UTF-8 TERM=xterm PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PIP_NO_INDEX=1 PIP_FIND_LINKS=/job/wheelhouse PIP_DISABLE_PIP_VERSION_CHECK=1
t() { local s=$SECONDS; echo "+ $*"; "$@"; local rc=$?; echo "  (rc=$rc, $((SECONDS - s)) s)"; return $rc; }
echo "kernel: $(uname -a)"; echo "cpus: $(nproc)  mem: $(free -m | awk '/Mem/{print $2}') MiB"
grep cgroup /proc/self/mountinfo | awk '{print "mount:", $5, $9}'
cd /job/repo && echo "project: $(git log --oneline -1)"
. /job/venv/bin/activate
# the project itself is built here, on this kernel's userland (C core compiled by cffi + gcc)
t pip install -q --no-build-isolation --no-deps -e .
cd /tmp
python - <<'PY'
import platform, socket, pysockopt
print("python", platform.python_version(), "kernel", platform.release())
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
c = socket.create_connection(srv.getsockname()); a, _ = srv.accept()
c.sendall(b"x" * 1000); a.recv(1000)
raw = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)
print("len(getsockopt(TCP_INFO, 512)) =", len(raw))
info = pysockopt.tcp_info(c)
print(repr(info))
print("size", info.size, "kernel", info.kernel, "extra", info.extra)
print("fields not returned (None):", [k for k, v in info.as_dict().items() if v is None])
print("listener:", pysockopt.tcp_info(srv).accept_queue, pysockopt.tcp_info(srv).accept_backlog)
PY
t pysockopt diagnose
t pysockopt states
t pysockopt netns
cd /job/repo
eval "pytest_args=($PYTEST_ARGS)"
t timeout $PYTEST_TIMEOUT python -m pytest "${pytest_args[@]}" -p no:cacheprovider --junitxml=/job/out/junit.xml
rc=$?
echo "pytest rc=$rc"
exit $rc
EOF
chmod +x "$RUN/stage/job.sh"
size_mb=$(( $(du -sm "$RUN/stage" | cut -f1) + 1024 ))
mkfs.ext4 -q -F -L ci-job -d "$RUN/stage" "$RUN/job.img" "${size_mb}M"
rm -rf "$RUN/stage"

# --- 6. boot -----------------------------------------------------------------------------
log "boot $VMLINUZ ($KVER) with $ACCEL, log: $RUN/serial.log"
if [ "$ACCEL" = kvm ]; then accel=(-enable-kvm -cpu host); else accel=(-accel tcg,thread=multi -cpu max); fi
qemu_args=("${accel[@]}" -m "$VM_MEM" -smp "$VM_CPUS" -nographic -no-reboot -nic none
  -kernel "$VMLINUZ"
  -append "root=/dev/vda rw console=ttyS0 quiet loglevel=3 systemd.show_status=false panic=-1 no_timer_check"
  -drive "file=$BASE,format=raw,if=virtio,snapshot=on"
  -drive "file=$RUN/job.img,format=raw,if=virtio")
[ -z "$INITRD" ] || qemu_args+=(-initrd "$INITRD")
boot=$SECONDS
TMPDIR=$RUN timeout "$VM_TIMEOUT" qemu-system-x86_64 "${qemu_args[@]}" </dev/null \
  | tee "$RUN/serial.log" || true
log "VM ran $((SECONDS - boot)) s"

# --- 7. results --------------------------------------------------------------------------
debugfs -R "rdump /out $RUN" "$RUN/job.img" >/dev/null 2>&1 || true
rc=$(cat "$RUN/out/rc" 2>/dev/null || echo 3)
[ -n "${KEEP_JOB:-}" ] || [ ! -e "$RUN/out/rc" ] || rm -f "$RUN/job.img"
log "done: rc=$rc, results in $RUN/out (console.log, junit.xml), total $((SECONDS - start)) s"
exit "$rc"
