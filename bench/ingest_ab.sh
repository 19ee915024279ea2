#!/usr/bin/env bash
# A/B of two ingest binaries on this machine, alternating runs so that both see the same
# noise: each run starts ingest on a fresh store, replays the load corpus at a fixed request
# rate it can keep up with, stops it (SIGTERM flushes everything), and reports the process's
# CPU over its whole life (/usr/bin/time user+sys) per stored span, its peak RSS, and the
# Parquet bytes it stored per span.
#
#   bench/ingest_ab.sh OLD_INGEST NEW_INGEST [ROUNDS=3] [PROTOCOL=grpc|http|http-json] [RATE=300] [SECONDS=15]
#
# RATE 0 sends as fast as ingest answers (8 clients): full load, with backpressure refusals.
# MERGE_REQUESTS=N sends N corpus requests as one (~130 spans each; 4 gives ~520).
# LOADGEN_ARGS adds loadgen options, e.g. "--context-bytes 0-0" for ~1,020-byte spans.
# OLD may be target/release/null-receiver (decode and count only): the ceiling, as a ratio.
#
# Needs target/release/loadgen (`make build`, i.e. cargo build --release --bins).
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 new=$2 rounds=${3:-3} proto=${4:-grpc} rate=${5:-300} secs=${6:-15}
loadgen=${LOADGEN:-target/release/loadgen}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() { # binary label
  local g h tpid ipid dir=$work/$2
  rm -rf "$dir"; mkdir -p "$dir"
  g=$(free_port) h=$(free_port)
  # The null receiver (the ceiling) decodes and counts only: no WAL, no store, no /healthz.
  local null=; [ "$(basename "$1")" = null-receiver ] && null=1
  local store=(--store "$dir/store" --wal-dir "$dir/wal"); [ -n "$null" ] && store=()
  /usr/bin/time -f "%U %S %M" -o "$dir/time" "$1" "${store[@]}" \
    --grpc-addr "127.0.0.1:$g" --http-addr "127.0.0.1:$h" 2>"$dir/log" &
  tpid=$!
  if [ -n "$null" ]; then
    sleep 0.5
  else
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$h/healthz" >/dev/null && break; sleep 0.05; done
  fi
  ipid=$(pgrep -P "$tpid")
  local target=(--grpc "http://127.0.0.1:$g")
  [ "$proto" = http ] && target=(--http "http://127.0.0.1:$h")
  [ "$proto" = http-json ] && target=(--http "http://127.0.0.1:$h" --json-body)
  "$loadgen" "${target[@]}" --seconds "$secs" --rate "$rate" --concurrency 8 --json \
    --merge-requests "${MERGE_REQUESTS:-1}" ${LOADGEN_ARGS:-} \
    >"$dir/load.json" 2>/dev/null
  kill -TERM "$ipid"; wait "$tpid" || true
  python3 - "$dir" "$2" <<'EOF'
import json, pathlib, sys
d, label = sys.argv[1], sys.argv[2]
stored = sum(p.stat().st_size for p in pathlib.Path(f"{d}/store").rglob("*.parquet"))
load = json.load(open(f"{d}/load.json"))
u, s, rss = open(f"{d}/time").read().split()
cpu = float(u) + float(s)
print(f"{label:4} spans {load['spans']:>9,}  errors {load['errors']:>5}  cpu {cpu:6.2f} s  "
      f"spans/cpu-s {load['spans'] / cpu:>9,.0f}  p99 {load['p99_ms']:6.2f} ms  peak RSS {int(rss) / 1024:6.0f} MiB  "
      f"{stored / max(load['spans'], 1):5.0f} B/span stored")
EOF
}

echo "protocol $proto, rate $rate req/s, $secs s, $rounds rounds" >&2
for r in $(seq "$rounds"); do
  run "$old" old
  run "$new" new
done
