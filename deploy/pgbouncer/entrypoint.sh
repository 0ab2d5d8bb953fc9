#!/bin/sh
# Writes PgBouncer's configuration from the environment, then runs it in the foreground.
#   PGBOUNCER_DATABASE   database name clients use and PostgreSQL serves (tuner)
#   PGBOUNCER_UPSTREAM   PostgreSQL host:port (db:5432)
#   PGBOUNCER_USERS      "user:password" pairs, one per line, that may connect (the worker role)
#   PGBOUNCER_POOL_SIZE  server connections per user and database (20)
#   PGBOUNCER_MAX_CLIENTS  client connections (1000)
set -eu
config=/etc/pgbouncer
printf '%s\n' "$PGBOUNCER_USERS" | while IFS=: read -r user password; do
  [ -n "$user" ] && printf '"%s" "%s"\n' "$user" "$(printf '%s' "$password" | sed 's/"/""/g')"
done > "$config/userlist.txt"
chmod 0600 "$config/userlist.txt"
cat > "$config/pgbouncer.ini" <<INI
[databases]
${PGBOUNCER_DATABASE:-tuner} = host=${PGBOUNCER_UPSTREAM%%:*} port=${PGBOUNCER_UPSTREAM##*:} dbname=${PGBOUNCER_DATABASE:-tuner}

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
unix_socket_dir =
logfile =
pidfile =
auth_type = scram-sha-256
auth_file = $config/userlist.txt
; Each transaction gets a server connection for its duration: the workers' locks are transaction
; advisory locks and their only session setting is the time zone, which PgBouncer keeps per client.
pool_mode = transaction
max_client_conn = ${PGBOUNCER_MAX_CLIENTS:-1000}
default_pool_size = ${PGBOUNCER_POOL_SIZE:-20}
reserve_pool_size = 5
server_reset_query = DISCARD ALL
ignore_startup_parameters = extra_float_digits
INI
exec pgbouncer "$config/pgbouncer.ini"
