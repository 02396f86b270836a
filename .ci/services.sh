#!/usr/bin/env bash
# The scale-out services on this machine, loopback only: PostgreSQL (role `tradewind`, databases
# `tradewind` for the Feast registry and `tradewind_mlflow` for MLflow, as in configs/platform.yaml)
# and Redis on 127.0.0.1:6379. Installs the Debian packages when missing; idempotent, and quick
# when everything is installed and running already. Needs root (apt-get, the postgres user).
set -euo pipefail

ROLE=tradewind
PASSWORD=tradewind
DATABASES=(tradewind tradewind_mlflow)
REDIS_PORT=6379

if [ "$(id -u)" -ne 0 ]; then
  echo "services.sh: needs root (apt-get install, starting PostgreSQL as its own user)" >&2
  exit 1
fi

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "services.sh: installing ${missing[*]}"
  apt-get update -qq
  # policy-rc.d may forbid starting services on install; they are started below either way
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PostgreSQL: the newest installed version's cluster, created if the image has none
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
cluster=$(pg_lsclusters -h | awk -v v="$version" '$1 == v {print $2; exit}')
if [ -z "$cluster" ]; then
  cluster=main
  pg_createcluster "$version" "$cluster" >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c {print $4}' | grep -q online
then
  pg_ctlcluster "$version" "$cluster" start
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 1
done
pg_isready -h 127.0.0.1 -p 5432 >/dev/null || { echo "services.sh: PostgreSQL is not ready" >&2; exit 1; }

psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -qtA -c \"$1\""; }
if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != 1 ]; then
  # CREATEDB: the scale-out tests make a scratch database of their own and drop it
  psql_admin "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'"
fi
for database in "${DATABASES[@]}"; do
  if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = '$database'")" != 1 ]; then
    psql_admin "CREATE DATABASE $database OWNER $ROLE"
  fi
done

# Redis: daemonized, loopback only, nothing persisted (the online store is rebuilt by materialize)
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
  mkdir -p /var/log/redis
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save '' --appendonly no \
    --dir /tmp --logfile /var/log/redis/tradewind-redis.log
  for _ in $(seq 1 30); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
    sleep 0.2
  done
fi
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping | grep -q PONG || { echo "services.sh: Redis is not up" >&2; exit 1; }

echo "services.sh: PostgreSQL $version/$cluster on 127.0.0.1:5432 (role $ROLE, databases ${DATABASES[*]})," \
  "Redis on 127.0.0.1:$REDIS_PORT"
