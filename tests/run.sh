#!/usr/bin/env bash
# The one command that sets up and runs the tests on a fresh machine (README, "Test it").
# It starts the local RabbitMQ and MariaDB when they are installed but down, installs Debian's
# Chromium for the browser tests and Node for the tus client when missing (needs root), then
# runs pytest through uv.
set -euo pipefail
cd "$(dirname "$0")/.."

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 1; done
  echo "port $1 did not open" >&2; return 1
}

if ! port_open 5672 && command -v rabbitmq-server >/dev/null; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached
  wait_port 5672
fi
if ! port_open 3306 && [ -x /usr/sbin/mariadbd ]; then
  echo "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_port 3306
fi

# The browser tests drive Debian's Chromium (never a downloaded one).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

# The reference tus client (tus-js-client) runs under Node in the resumable-upload tests;
# npm installs it, pinned by tests/tus/package-lock.json, into tests/tus/node_modules.
if ! command -v node >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Node"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
if [ ! -d tests/tus/node_modules ] && command -v npm >/dev/null; then
  npm ci --prefix tests/tus --no-audit --no-fund --silent
fi

python3 -m pip install --quiet uv
exec uv run --frozen pytest "$@"
