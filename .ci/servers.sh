#!/usr/bin/env bash
# The servers tests/test_integrations.py starts on loopback (it never uses running services):
# PostgreSQL 15 (initdb/pg_ctl/postgres) and redis-server. Installed only when missing, so a
# second run costs nothing and makes no network request.
set -euo pipefail

missing=()
if [ ! -x /usr/lib/postgresql/15/bin/initdb ] || [ ! -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
  missing+=(postgresql)
fi
if ! command -v redis-server >/dev/null; then
  missing+=(redis-server)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "+ apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian packages may start their own services; the tests use their own instances on
# other ports, so those are left as they are.
