#!/usr/bin/env bash
# Set up campaign-dispatch on a Debian machine with Python 3.11+: system libraries, a virtualenv
# in .venv with the project installed, and (with --services) PostgreSQL and Redis for the tests.
# Safe to run again: it installs only what is missing and starts only what is not running.
set -euo pipefail
cd "$(dirname "$0")/.."

want_services=0
extras=""
for arg in "$@"; do
  case "$arg" in
    --services) want_services=1; extras="[test]" ;;
    --test) extras="[test]" ;;
    *) echo "usage: deploy/setup.sh [--test] [--services]" >&2; exit 2 ;;
  esac
done

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated = 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  echo "setup: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# WeasyPrint needs Pango; libharfbuzz-subset0 makes font subsetting ~6x faster; DejaVu renders Ø ë é.
apt_install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core shared-mime-info

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "setup: Python 3.11 or newer is needed as '$PY'" >&2; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv 2>/dev/null || { apt_install python3-venv; rm -rf .venv; "$PY" -m venv .venv; }
fi
stamp=".venv/.installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".$extras"
  touch "$stamp"
fi

[ $want_services = 1 ] || exit 0

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # wait_port PORT NAME
  for _ in $(seq 100); do port_open "$1" && return 0; sleep 0.1; done
  echo "setup: $2 did not start on 127.0.0.1:$1" >&2; exit 1
}

# Redis on 127.0.0.1:6379, keeping nothing on disk. (The package may start one itself.)
if ! port_open 6379; then
  apt_install redis-server
  if ! port_open 6379; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
  wait_port 6379 Redis
fi

# PostgreSQL on 127.0.0.1:5432 with user postgres reachable without a password from localhost.
if ! port_open 5432; then
  apt_install postgresql
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! grep -q "campaign-dispatch tests" "$hba"; then
    # Trust local TCP connections for the test user only: this is a test machine's set-up.
    sed -i '1i # campaign-dispatch tests\nhost all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' "$hba"
  fi
  if port_open 5432; then  # the package started it: read the new pg_hba.conf
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
  else
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  wait_port 5432 PostgreSQL
fi
