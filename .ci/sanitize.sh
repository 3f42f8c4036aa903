#!/usr/bin/env bash
# CI sanitizer stage: build the C core with AddressSanitizer and UndefinedBehaviorSanitizer in a
# separate build directory (the tree's own build is left alone) and run the C-facing tests
# against that build. Any sanitizer report fails the stage: the sanitizers halt on the first
# error, and the log is searched for reports as well. About a minute; slow timing tests are
# deselected here (the main test run has them). The C-facing tests: TCP_INFO, keepalive, the
# sock_diag dump and /proc parser (connections, netlink, fuzz smoke), bad input, reentrancy,
# namespaces (csrc/netns.c), the scrape tally (csrc/tally.c), the destroy announcements
# (csrc/events.c) and the typed layer (_core.py).
#
#   .ci/sanitize.sh [extra pytest arguments]
#
# Needs gcc (its libasan / libubsan). Makes its own venv of $PYTHON (default python3) with what
# the build and these tests need (setuptools >= 77 for pyproject's license field, cffi, pytest,
# hypothesis, prometheus_client), so it passes on a bare machine whatever the interpreter has.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
base_python="${PYTHON:-python3}"

libasan="$(gcc -print-file-name=libasan.so)"
if [ ! -e "$libasan" ]; then
  echo "sanitize.sh: gcc's libasan.so not found ($libasan)" >&2
  exit 1
fi

build="$(mktemp -d "${TMPDIR:-/tmp}/pysockopt-sanitize.XXXXXX")"
venv="$(mktemp -d "${TMPDIR:-/tmp}/pysockopt-sanitize-venv.XXXXXX")"
log="$build/sanitize.log"
# SANITIZE_KEEP=1 keeps the build directory (and any reports) for a look afterwards.
if [ -z "${SANITIZE_KEEP:-}" ]; then trap 'rm -rf "$build" "$venv"' EXIT; else trap 'rm -rf "$venv"' EXIT; fi

echo "+ venv of $base_python with setuptools>=77 cffi pytest hypothesis prometheus_client"
"$base_python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  'setuptools>=77' 'cffi>=1.15' 'pytest>=7' 'hypothesis>=6' 'prometheus_client>=0.17'
chmod -R a+rX "$venv"   # tests that drop privileges run this interpreter as another user
python="$venv/bin/python"

# A copy of the sources without any built extension, so nothing unsanitized can be imported.
tar -C "$root" --exclude='*.so' --exclude=__pycache__ --exclude=build \
    -cf - pysockopt csrc tests docs setup.py pyproject.toml README.md LICENSE \
  | tar -C "$build" -xf -
chmod -R a+rX "$build"  # tests that drop privileges import the package as another user

echo "+ build the C core with -fsanitize=address,undefined in $build"
(
  cd "$build"
  # -fno-sanitize-recover: UBSan aborts on its first report instead of printing and going on.
  CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1" \
  LDFLAGS="-fsanitize=address,undefined" \
    "$python" setup.py -q build_ext --inplace >"$build/build.log" 2>&1 \
    || { cat "$build/build.log" >&2; exit 1; }
)
so="$(ls "$build"/pysockopt/_native*.so)"
if ! ldd "$so" | grep libasan >/dev/null; then  # not -q: ldd must not die of SIGPIPE
  echo "sanitize.sh: $so is not linked with libasan" >&2
  exit 1
fi

# The interpreter is not built with ASan: its runtime must be loaded first. Leak checking is off
# (CPython keeps memory until exit by design); everything else halts on the first report.
# ASan reports go to files (child processes inherit the setting); UBSan's go to stderr, which
# pytest must not capture at the descriptor level (--capture=sys below): a process that halts
# would take the captured text with it.
reports="$build/sanitizer-report"
export LD_PRELOAD="$libasan"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86:log_path=$reports"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87:log_path=$reports"
export PYTHONPATH="$build"
export PYTHONDONTWRITEBYTECODE=1

# Run from the build directory, so `python -m pytest` imports the sanitized package.
cd "$build"
imported="$("$python" -c 'import pysockopt._native as n; print(n.__file__)')"
case "$imported" in
  "$build"/*) ;;
  *) echo "sanitize.sh: imported $imported, not the sanitized build" >&2; exit 1 ;;
esac

echo "+ C-facing tests under ASan + UBSan"
status=0
"$python" -m pytest -q -rfEs -p no:cacheprovider --capture=sys -m "not slow" \
  tests/test_tcpinfo.py tests/test_keepalive.py tests/test_connections.py tests/test_inputs.py \
  tests/test_netlink.py tests/test_reentry.py tests/test_fuzz.py tests/test_namespaces.py \
  tests/test_prometheus.py tests/test_core.py tests/test_closed.py \
  "$@" 2>&1 | tee "$log" \
  || status=$?
# A report in a child process, or one a test caught, still fails the stage.
if ls "$reports".* >/dev/null 2>&1; then
  cat "$reports".* >&2
  echo "sanitize.sh: sanitizer report above" >&2
  exit 1
fi
if grep -E "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$log" >/dev/null; then
  echo "sanitize.sh: sanitizer report in the test output" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "sanitize.sh: tests failed under the sanitizers (status $status)" >&2
  exit "$status"
fi
echo "sanitize.sh: no sanitizer report"
