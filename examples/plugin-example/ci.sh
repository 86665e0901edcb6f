#!/usr/bin/env bash
# Proves a third party can add a destination without touching the core: installs the example
# plugin (its own distribution, built as a wheel) into the project's .venv next to the
# workspace, then runs its tests, conformance suite included, against a real WebDAV server.
#
# usage (from anywhere): bash examples/plugin-example/ci.sh [PYTEST_ARGS...]
# needs: `make install` done (.venv exists); rclone (installed here with apt when missing).
# The install is not in uv.lock: a later `uv sync` removes it again (`uv run` leaves it).
set -euo pipefail
cd "$(dirname "$0")/../.."

uv=.tools/bin/uv
[ -x "$uv" ] || uv=uv

if ! command -v rclone >/dev/null; then
  echo "plugin-example: installing rclone (apt), the WebDAV server the tests start"
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=(); [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends rclone >/dev/null
fi

echo "plugin-example: installing service-backup-webdav into .venv"
# Not editable, rebuilt every time: the test runs what a wheel really ships.
"$uv" pip install --quiet --python .venv/bin/python \
  --reinstall-package service-backup-webdav "examples/plugin-example[test]"

.venv/bin/python -m pytest examples/plugin-example/tests "$@"
