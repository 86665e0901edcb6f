#!/usr/bin/env bash
# A stand-in source_executable: "dump" some service data into the folder to back up.
set -euo pipefail
dir=${1:?usage: demo-snapshot.sh FOLDER}
mkdir -p "$dir/redis" "$dir/config"
date -u +%FT%TZ > "$dir/redis/dump-taken-at.txt"
head -c 1048576 /dev/urandom > "$dir/redis/dump.rdb"
printf 'maxmemory 1gb\nappendonly yes\n' > "$dir/config/redis.conf"
