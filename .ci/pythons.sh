#!/usr/bin/env bash
# The fast tests on the other Pythons the project supports (3.10, Debian's 3.11, 3.13), each
# in a venv of its own with the extension built for it. An interpreter this machine does not
# have is reported and skipped: the main run above already covers the default one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for py in python3.10 /usr/bin/python3.11 python3.13 \
          /root/.pyenv/versions/3.10*/bin/python /root/.pyenv/versions/3.13*/bin/python; do
  # pyenv shims exist for versions that are not selected: ask the interpreter itself.
  version=$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) \
    || continue
  case " ${seen:-} " in *" $version "*) continue ;; esac
  seen="${seen:-} $version"
  if ! "$py" -m venv "$work/$version" >/dev/null 2>&1; then
    echo "python $version: no venv module, skipped"
    continue
  fi
  tree="$work/tree-$version"
  mkdir -p "$tree"
  git ls-files -z | xargs -0 tar -c | tar -x -C "$tree"
  # pip's and the build's output only when they fail (a failure is this stage's failure)
  if ! out=$("$work/$version/bin/python" -m pip install -q --disable-pip-version-check \
               cffi pytest hypothesis 'setuptools>=77' 2>&1); then
    echo "$out"; echo "python $version: pip install failed"; status=1; continue
  fi
  if ! out=$(cd "$tree" && "$work/$version/bin/python" setup.py -q build_ext --inplace 2>&1); then
    echo "$out"; echo "python $version: building the C core failed"; status=1; continue
  fi
  # Tests that drop privileges import the package as another user: mktemp made this 0700.
  chmod -R a+rX "$work"
  echo "+ python $version: pytest -m 'not slow' (no client-library or exporter tests)"
  # -rfEs: each failure, error and skip reason in the log
  if ! (cd "$tree" && PYTHONPATH=$tree "$work/$version/bin/python" -m pytest -q -rfEs \
          -p no:cacheprovider -m "not slow" --ignore=tests/test_integrations.py \
          --ignore=tests/test_prometheus.py --ignore=tests/test_wheel.py); then
    echo "python $version: tests failed"
    status=1
  fi
done
echo "other pythons:${seen:- none found}"
exit $status
