#!/usr/bin/env bash
# `make demo`: one manual backup of sample data to a local folder, then show where it landed.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf demo && mkdir -p demo/source
echo "== validate"
.venv/bin/service-backup validate examples/local.yml
echo "== manual-backup (JSON log lines)"
.venv/bin/manual-backup examples/local.yml
echo "== files in the backup destination"
find demo/backups -type f -printf '%p  (%s bytes)\n' | sort
