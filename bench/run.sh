#!/usr/bin/env bash
# `make bench`: whole-process benchmarks of the release binaries on this machine. Prints each
# figure and appends a dated section (machine, commit, commands, figures) to BENCHMARKS.md.
# Not part of `make test`. Installs what it needs itself (DuckDB in .venv via scripts/pyenv.sh).
#
#   BENCH_SECONDS=20 BENCH_CONCURRENCY=8 BENCH_LOAD_TRACES=3000 BENCH_TRACES=130000 bench/run.sh
#
# 1. ingest over gRPC, HTTP/protobuf and OTLP/JSON, WAL on, flushing to a local store, against the
#    project's load generator (pre-encoded realistic LLM-app spans): accepted spans/s, p50/p99
#    request latency, CPU seconds per million spans and spans per CPU-second of the ingest
#    process, its peak RSS; the same generator against `null-receiver` (decode and count only)
#    as the ceiling on this machine, and the ratio; and ingest as a fraction of P, the naive
#    path (decode -> Arrow -> Parquet zstd-1 -> fsync) measured in process on the same corpus
#    (`naive-path`), which the issue's targets are stated in. The OTLP/JSON target (95k stored
#    spans per CPU-second where P was 160k) is compared as its share of P, 0.59 P, since this
#    machine's speed moves by more than 1.5x between hours.
# 2. storage: a corpus of BENCH_TRACES traces sent once; Parquet bytes per stored span against
#    the OTLP protobuf bytes per span of the same requests.
# 3. curate: each built-in rule over that store against the same SQL in DuckDB
#    (bench/curate_vs_duckdb.py), as a ratio. BENCH_CURATE_SEEDS=N sends N corpora of distinct
#    traces (N x ~1M spans; 10 for the 10M-span figure); BENCH_CURATE_STORE=DIR uses an
#    existing store instead.
#
# BENCH_ONLY=ingest runs part 1 and P alone and prints their figures (nothing is appended).
# BENCH_ONLY=curate runs part 3 alone and prints its figures (nothing is appended): it builds
# a store of BENCH_CURATE_SEEDS corpora spread over a day of hourly partitions (loadgen
# --hours 24, as a day of live traffic lands) in BENCH_CURATE_STORE, or a temporary
# directory, keeping a store that already has span files. Only curate, ingest and loadgen
# are built then.
#
#   BENCH_ONLY=curate BENCH_CURATE_SEEDS=10 BENCH_CURATE_STORE=/tmp/store10m bench/run.sh
# 4. eval-runner: items/s and CPU per item against a judge with 50 ms latency at concurrency 64
#    (bench/eval_runner.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECONDS:-20}
conc=${BENCH_CONCURRENCY:-8}
traces=${BENCH_TRACES:-130000}
# Corpus that loadgen cycles through against the receivers, and that P is measured on: the
# same one for both (P on a 130,000-trace corpus is ~0.65x P on this one, 2026-12-06).
load_traces=${BENCH_LOAD_TRACES:-3000}
bin=target/release

only=${BENCH_ONLY:-}
# The whole workspace, as `make build` does: building single packages (-p) unifies other
# features and rebuilds DataFusion from scratch (half an hour on 2 cores).
cargo build --release --bins
scripts/pyenv.sh >/dev/null
py=.venv/bin/python
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts ingest on a fresh store under $work/$1, under /usr/bin/time so that its CPU and peak
# RSS include the final flush at exit; sets ING_PID (ingest), TIME_PID, ING_GRPC, ING_HTTP.
start_ingest() {
  local g h
  g=$(free_port) h=$(free_port)
  /usr/bin/time -f "%U %S %M" -o "$work/$1.time" "$bin/ingest" --store "$work/$1/store" \
    --wal-dir "$work/$1/wal" --grpc-addr "127.0.0.1:$g" --http-addr "127.0.0.1:$h" \
    2>"$work/$1.log" &
  TIME_PID=$!
  pids+=("$TIME_PID")
  ING_GRPC="http://127.0.0.1:$g" ING_HTTP="http://127.0.0.1:$h"
  for _ in $(seq 200); do
    curl -sf "$ING_HTTP/healthz" >/dev/null && ING_PID=$(pgrep -P "$TIME_PID") && pids+=("$ING_PID") && return
    sleep 0.05
  done
  echo "ingest did not start: $(cat "$work/$1.log")" >&2
  exit 1
}
# SIGTERM to ingest (it flushes everything, then exits) and wait for /usr/bin/time.
stop_ingest() { kill -TERM "$ING_PID"; wait "$TIME_PID" 2>/dev/null || true; }
stop() { kill -TERM "$1"; wait "$1" 2>/dev/null || true; }

load() { # protocol (grpc, http, http-json) url pid out.json
  local target=("--$1" "$2")
  [ "$1" = http-json ] && target=(--http "$2" --json-body)
  "$bin/loadgen" "${target[@]}" --traces "$load_traces" --seconds "$secs" --concurrency "$conc" --pid "$3" --json \
    >"$4" 2>/dev/null
}

# Sends corpora FROM..TO (seeds) once each, paced below the flush limit so that no request is
# refused, to the running ingest; extra loadgen arguments follow.
send_seeds() {
  local from=$1 to=$2 seed
  shift 2
  for seed in $(seq "$from" "$to"); do
    "$bin/loadgen" --grpc "$ING_GRPC" --traces "$traces" --once --seed "$seed" --rate 300 \
      --seconds 3600 --concurrency "$conc" --json "$@" >/dev/null 2>&1
  done
}

if [ "$only" = curate ]; then
  store=${BENCH_CURATE_STORE:-$work/curate/store}
  if [ -z "$(find "$store/spans" -name '*.parquet' -print -quit 2>/dev/null)" ]; then
    echo "== curate store: ${BENCH_CURATE_SEEDS:-1} corpora of $traces traces into $store" >&2
    start_ingest curate
    # ingest writes under $work/curate/store; move it where asked once flushed.
    send_seeds 1 "${BENCH_CURATE_SEEDS:-1}" --hours 24
    stop_ingest
    if [ "$store" != "$work/curate/store" ]; then
      mkdir -p "$store"
      mv "$work/curate/store/spans" "$store/spans"
    fi
  fi
  echo "== curate vs DuckDB on $store" >&2
  $py bench/curate_vs_duckdb.py "$store" --curate "$bin/curate" --runs "${BENCH_CURATE_RUNS:-3}"
  exit 0
fi

echo "== ingest and null receiver, ${secs}s each, concurrency $conc" >&2
for proto in grpc http http-json; do
  start_ingest "ingest-$proto"
  url=$ING_GRPC; [ "$proto" != grpc ] && url=$ING_HTTP
  load "$proto" "$url" "$ING_PID" "$work/ingest-$proto.json"
  stop_ingest
done
for proto in grpc http http-json; do
  "$bin/null-receiver" >"$work/null.out" 2>"$work/null.err" &
  npid=$!
  pids+=("$npid")
  for _ in $(seq 100); do grep -q listening "$work/null.out" 2>/dev/null && break; sleep 0.05; done
  url=$(sed -n "s/.*${proto%-json}=\([^ ]*\).*/\1/p" "$work/null.out")
  load "$proto" "$url" "$npid" "$work/null-$proto.json"
  stop "$npid"
done

echo "== P: the naive path in process on the same corpus (naive-path)" >&2
"$bin/naive-path" --traces "$load_traces" --seconds 10 --json >"$work/p.json" 2>/dev/null

report() { # the figures of part 1 and P as Markdown
  $py - "$work" <<'PY'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
PROTOCOLS = ("grpc", "http", "http-json")
runs = {}
for kind in ("ingest", "null"):
    for proto in PROTOCOLS:
        r = json.loads((work / f"{kind}-{proto}.json").read_text())
        t = work / f"{kind}-{proto}.time"
        if t.exists():  # ingest: CPU and peak RSS over its whole life, final flush included
            user, sys_, rss_kb = t.read_text().split()[-3:]
            r["receiver_cpu_s"] = float(user) + float(sys_)
            r["spans_per_cpu_s"] = r["spans"] / r["receiver_cpu_s"]
            r["receiver_peak_rss_mib"] = int(rss_kb) / 1024
        runs[(kind, proto)] = r
out = ["| receiver | protocol | spans/s | p50 ms | p99 ms | CPU s / M spans | spans / CPU-s | peak RSS MiB | refused |",
       "|---|---|---|---|---|---|---|---|---|"]
for (kind, proto), r in runs.items():
    per_cpu = r.get("spans_per_cpu_s")
    cpu_m = (1e6 / per_cpu) if per_cpu else None
    out.append(f"| {kind} | {proto} | {r['spans_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
               f"{cpu_m:.2f} | {per_cpu:,.0f} | {r.get('receiver_peak_rss_mib') or 0:.0f} | {r['errors']} |"
               if per_cpu else f"| {kind} | {proto} | {r['spans_per_s']:,.0f} | | | | | | {r['errors']} |")
out.append("")
for proto in PROTOCOLS:
    i, n = runs.get(("ingest", proto)), runs.get(("null", proto))
    if i and n and i.get("spans_per_cpu_s") and n.get("spans_per_cpu_s"):
        out.append(f"ingest/{proto}: {i['spans_per_cpu_s'] / n['spans_per_cpu_s']:.2f} of the null receiver's spans per CPU-second, "
                   f"{i['spans_per_s'] / n['spans_per_s']:.2f} of its spans/s.")
p = json.load(open(work / "p.json"))
out.append(f"\nP on this corpus ({p['request_bytes_per_span']:,.0f} request B/span; `naive-path`: decode -> Arrow -> "
           f"Parquet zstd-1 -> fsync in process, no transport): {p['p_spans_per_cpu_s']:,.0f} spans per CPU-second.")
targets = {"grpc": "0.6 P first, P the goal", "http": "within 10% of gRPC",
           "http-json": "95k where P was 160k: 0.59 P"}
for proto in PROTOCOLS:
    i = runs.get(("ingest", proto))
    if i and i.get("spans_per_cpu_s"):
        out.append(f"ingest/{proto}: {i['spans_per_cpu_s'] / p['p_spans_per_cpu_s']:.2f} P (target: {targets[proto]}).")
g, h = runs.get(("ingest", "grpc")), runs.get(("ingest", "http"))
if g and h and g.get("spans_per_cpu_s") and h.get("spans_per_cpu_s"):
    out.append(f"ingest/http: {h['spans_per_cpu_s'] / g['spans_per_cpu_s']:.2f} of gRPC's spans per CPU-second.")
print("\n".join(out))
PY
}
if [ "$only" = ingest ]; then
  report
  exit 0
fi

echo "== storage: $traces traces sent once" >&2
start_ingest storage
# Paced below the flush limit so that no request is refused; further seeds add distinct traces
# for the curate benchmark (BENCH_CURATE_SEEDS=10 with the default BENCH_TRACES: ~10M spans).
"$bin/loadgen" --grpc "$ING_GRPC" --traces "$traces" --once --rate 300 --seconds 3600 \
  --concurrency "$conc" --json >"$work/storage.json" 2>/dev/null
stop_ingest
find "$work/storage/store/spans" -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END {print s}' \
  >"$work/storage.bytes"
if [ "${BENCH_CURATE_SEEDS:-1}" -gt 1 ]; then
  start_ingest storage
  send_seeds 2 "$BENCH_CURATE_SEEDS"
  stop_ingest
fi
store=${BENCH_CURATE_STORE:-$work/storage/store}

echo "== curate vs DuckDB on $store" >&2
$py bench/curate_vs_duckdb.py "$store" --curate "$bin/curate" --runs 3 >"$work/curate.txt"

echo "== eval-runner" >&2
bench/eval_runner.sh 8000 50 64 >"$work/eval.txt" 2>/dev/null

report >"$work/ingest.md"
$py - "$work" "$store" "$traces" <<'PY'
import json, os, pathlib, platform, subprocess, sys, datetime
work, store, traces = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
out = [f"\n## {datetime.date.today()} — make bench (commit {commit}{'+' if dirty else ''}, release build)\n",
       f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}. "
       f"`bench/run.sh` with BENCH_SECONDS={os.environ.get('BENCH_SECONDS', 20)}, "
       f"BENCH_CONCURRENCY={os.environ.get('BENCH_CONCURRENCY', 8)}, BENCH_TRACES={traces}. "
       "Load generator and receiver share the cores. CPU is the receiver's user+sys; for ingest over its "
       "whole life, so the flush of everything it accepted is included. `refused` are requests ingest "
       "answered with UNAVAILABLE / 429 and a retry delay because its WAL backlog was over the limit "
       "(flushing to Parquet is slower than accepting); spans/s counts accepted spans only.\n",
       (work / "ingest.md").read_text().strip()]
st = json.load(open(work / "storage.json"))
parquet = int((work / "storage.bytes").read_text())
spans = st["spans"]
otlp = st["corpus_bytes"] / st["corpus_spans"]
out.append(f"\nStorage: {spans:,} spans sent once; Parquet {parquet:,} B = {parquet / spans:.0f} B/span; "
           f"OTLP protobuf {otlp:.0f} B/span ({parquet / spans / otlp:.1%}).")
out.append("\ncurate vs DuckDB (`bench/curate_vs_duckdb.py`, best of 3, ratio = curate time / DuckDB time):\n\n```")
out.append((work / "curate.txt").read_text().strip().split("\n{")[0])
out.append("```\n\neval-runner (`bench/eval_runner.sh 8000 50 64`):\n\n```")
out.append((work / "eval.txt").read_text().strip())
out.append("```")
text = "\n".join(out) + "\n"
print(text)
with open("BENCHMARKS.md", "a") as f:
    f.write(text)
PY
