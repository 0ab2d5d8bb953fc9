#!/bin/sh
# Compose's preflight (docker-compose.yml): refuses to publish PostgreSQL and PgBouncer beyond loopback
# while a password is one anyone can read, a value in .env.example or a default of docker-compose.yml.
# Usage: sh deploy/preflight.sh .env.example docker-compose.yml   (checks the environment it runs in)
set -eu

case "${DB_BIND:-127.0.0.1}" in 127.*|localhost|::1) exit 0 ;; esac

# NAME=value lines (commented out or not) and ${NAME:-value} defaults, one value a line.
published=$(for file in "$@"; do
  sed -n 's/^[#[:space:]]*[A-Za-z_][A-Za-z0-9_]*=//p' "$file"
  grep -o '\${[A-Za-z_][A-Za-z0-9_]*:-[^}]*}' "$file" | sed 's/^[^:]*:-//; s/}$//' || true
done)

for name in POSTGRES_PASSWORD ADMIN_DB_PASSWORD WORKER_DB_PASSWORD DASHBOARD_DB_PASSWORD; do
  password=$(printenv "$name" || true)
  if [ -z "$password" ] || printf '%s\n' "$published" | grep -qxF -e "$password"; then
    echo "refusing to publish PostgreSQL on DB_BIND=$DB_BIND with a built-in password: $name is empty or" \
         "published in .env.example or docker-compose.yml; set it in .env to a value of your own" >&2
    exit 1
  fi
done
