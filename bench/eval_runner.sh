#!/usr/bin/env bash
# eval-runner throughput against the fake judge with a fixed latency.
#
#   bench/eval_runner.sh [ITEMS=4000] [LATENCY_MS=50] [CONCURRENCY=64]
#
# Needs the release binaries: cargo build --release --bin eval-runner --bin judge-server.
# Prints items/s against the concurrency bound (CONCURRENCY / latency) and the runner's CPU
# (user + sys) per item. No cache, no span emission: the judge round trips are what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
items=${1:-4000} latency=${2:-50} conc=${3:-64}
bin=target/release
work=$(mktemp -d)
trap 'kill "$judge_pid" 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp "$work/results.jsonl" "$KEEP"; rm -rf "$work"' EXIT
"$bin/judge-server" --latency-ms "$latency" >"$work/judge.out" &
judge_pid=$!
for _ in $(seq 100); do grep -q listening "$work/judge.out" 2>/dev/null && break; sleep 0.05; done
url=$(sed -n 's/^listening on //p' "$work/judge.out")
python3 - "$items" >"$work/dataset.jsonl" <<'PY'
import json, sys
for n in range(int(sys.argv[1])):
    print(json.dumps({"id": f"item-{n}", "trace_id": f"{n:032x}", "span_id": f"{n + 1:016x}",
        "input": [{"role": "system", "content": "Answer from the context."},
                  {"role": "user", "content": f"Question {n}: how is egress billed for project {n}?"}],
        "output": "Egress is billed per GiB after the first 100 GiB each month. " * 4,
        "context": ["Egress billing: the first 100 GiB per month are free; then per GiB."] * 3,
        "expected_output": None, "metadata": {"model": "gpt-4o-mini"}}))
PY
/usr/bin/time -f "%e %U %S %M" -o "$work/time" "$bin/eval-runner" --dataset "$work/dataset.jsonl" \
  --judge-url "$url/v1" --judge-model gpt-4o-mini --out "$work/results.jsonl" \
  --concurrency "$conc" --no-cache --json >"$work/summary.json"
read -r wall user sys rss_kb <"$work/time"
python3 - "$items" "$latency" "$conc" "$wall" "$user" "$sys" "$rss_kb" "$work/results.jsonl" <<'PY'
import json, sys
items, latency, conc = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
wall, user, sys_, rss = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
lines = sum(1 for _ in open(sys.argv[8]))
bound = conc / (latency / 1000) if latency > 0 else float("inf")
rate = items / wall
print(f"items {items} (result lines {lines}), judge latency {latency:.0f} ms, concurrency {conc}")
print(f"wall {wall:.2f} s -> {rate:.0f} items/s; bound {bound:.0f}/s; ratio {rate / bound:.3f}")
print(f"runner CPU {user + sys_:.2f} s -> {1000 * (user + sys_) / items:.3f} ms per item; peak RSS {rss / 1024:.0f} MiB")
PY
