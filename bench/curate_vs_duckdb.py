#!/usr/bin/env python3
"""Rule queries of `curate` (DataFusion) against the same SQL run by DuckDB on the same files.

    bench/curate_vs_duckdb.py STORE_DIR [--curate target/release/curate] [--runs 3]

DuckDB gets the views of curate/src/catalog.rs translated once (macros make the rule SQL
identical in both engines: arrow_cast(ts, 'Int64') -> epoch_ns, cost_usd -> a price-table
lookup). RULES are the built-in rules' SQL with their defaults (curate/src/rules.rs
`builtin_sql`; low-score with metric=faithfulness). Each rule runs as
`SELECT count(*) FROM (<rule SQL>)` over the whole store, best of --runs, timed four ways:

- curate process: `curate --sql ... --all` from exec to exit (start, catalog, listing, query);
- curate query: the same process's own account (`RUST_LOG=curate=info`, its `query` log line:
  opening the catalog, planning and running; process start and exit left out);
- DuckDB query: the query in an open connection after the views exist (start, connection
  and view set-up left out);
- DuckDB process: a fresh Python process that imports duckdb, connects, creates the views and
  runs the query (this script with --duckdb-count), so both sides pay a process start.

- CPU: user+sys seconds of the curate process (process start included) against the CPU of
  DuckDB's query in the open connection (its threads run in this process: `time.process_time`),
  the least noisy comparison on a shared machine.

Ratios: process/process (the whole-command comparison a user sees), query/query (the engines'
work on the files), CPU/CPU. `--duckdb-start` is also printed: a DuckDB process that sets up the views
and runs no rule, what the process figure adds to DuckDB's query. Checks both engines count
the same traces. Needs the .venv (duckdb).
"""
import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
import tomllib

import duckdb

RULES = {
    "slow": "SELECT trace_id FROM traces WHERE root_duration_ns > 5000000000",
    "costly (0.01 USD)": "SELECT trace_id FROM trace_usage WHERE cost_usd > 0.01",
    "costly (3000 tokens)": "SELECT trace_id FROM trace_usage WHERE input_tokens + output_tokens > 3000",
    "errors": "SELECT DISTINCT trace_id FROM spans WHERE status_code = 'ERROR'",
    "quick-followup": (
        "SELECT DISTINCT b.trace_id FROM traces a JOIN traces b ON a.session_id = b.session_id "
        "AND a.trace_id <> b.trace_id WHERE arrow_cast(b.root_start, 'Int64') - arrow_cast(a.root_end, 'Int64') >= 0 "
        "AND arrow_cast(b.root_start, 'Int64') - arrow_cast(a.root_end, 'Int64') < 10000000000"
    ),
    "negative-feedback": (
        "SELECT trace_id FROM spans WHERE try_cast(attributes['feedback.score'] AS DOUBLE) < 0 "
        "OR lower(attributes['feedback.sentiment']) IN ('negative', 'thumbs_down', 'down') "
        "UNION SELECT trace_id FROM "
        "(SELECT trace_id, unnest(events) AS e FROM spans) "
        "WHERE try_cast(e['attributes']['feedback.score'] AS DOUBLE) < 0 "
        "OR lower(e['attributes']['feedback.sentiment']) IN ('negative', 'thumbs_down', 'down')"
    ),
    "low-score": (
        "SELECT DISTINCT judged_trace_id AS trace_id FROM evals "
        "WHERE metric = 'faithfulness' AND score < 0.5"
    ),
}

IS_LLM_CALL = ("(gen_ai_operation_name IN ('chat', 'text_completion', 'generate_content', 'completion') "
               "OR attributes['openinference.span.kind'] = 'LLM' "
               "OR gen_ai_input_tokens IS NOT NULL OR gen_ai_output_tokens IS NOT NULL)")

# `traces` of commit 72badee and before: usage totals over `llm_calls` (which reads the
# attribute maps to find the calls), for --duckdb-views before.
DUCKDB_VIEWS_BEFORE_LLM = """CREATE VIEW llm_calls AS
WITH calls AS (SELECT * FROM spans WHERE {is_llm}),
usage AS (
  SELECT trace_id, span_id, parent_span_id, start_time, end_time,
    coalesce(gen_ai_input_tokens, 0) AS input_tokens, coalesce(gen_ai_output_tokens, 0) AS output_tokens
  FROM spans WHERE gen_ai_input_tokens IS NOT NULL OR gen_ai_output_tokens IS NOT NULL),
usage_parents AS (SELECT DISTINCT trace_id, parent_span_id AS span_id FROM usage WHERE parent_span_id IS NOT NULL),
leaves AS (
  SELECT u.* FROM usage u LEFT JOIN usage_parents p ON p.trace_id = u.trace_id AND p.span_id = u.span_id
  WHERE p.span_id IS NULL),
counted AS (
  SELECT DISTINCT l.trace_id, l.span_id FROM leaves l
  LEFT JOIN leaves o ON o.trace_id = l.trace_id
    AND o.input_tokens = l.input_tokens AND o.output_tokens = l.output_tokens
    AND o.span_id < l.span_id AND o.start_time <= l.end_time AND l.start_time <= o.end_time
  WHERE o.span_id IS NULL)
SELECT c.trace_id, c.span_id, coalesce(c.gen_ai_response_model, c.gen_ai_request_model) AS model,
  c.gen_ai_input_tokens AS input_tokens, c.gen_ai_output_tokens AS output_tokens,
  k.span_id IS NOT NULL AS usage_counted,
  CASE WHEN c.gen_ai_input_tokens IS NOT NULL OR c.gen_ai_output_tokens IS NOT NULL
    THEN cost_usd(coalesce(c.gen_ai_response_model, c.gen_ai_request_model),
                  coalesce(c.gen_ai_input_tokens, 0), coalesce(c.gen_ai_output_tokens, 0)) END AS cost_usd
FROM calls c LEFT JOIN counted k ON k.trace_id = c.trace_id AND k.span_id = c.span_id;
"""
DUCKDB_TOTALS_BEFORE = """CREATE VIEW trace_usage AS
  SELECT trace_id, count(*) AS llm_calls, sum(coalesce(input_tokens, 0)) AS input_tokens,
    sum(coalesce(output_tokens, 0)) AS output_tokens, sum(coalesce(cost_usd, 0.0)) AS cost_usd
  FROM llm_calls WHERE usage_counted GROUP BY trace_id;
"""

DUCKDB_VIEWS = """
CREATE MACRO arrow_cast(x, t) AS epoch_ns(x);
CREATE VIEW spans AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true,
  hive_types = {{'tenant': VARCHAR, 'date': VARCHAR, 'hour': VARCHAR}});
CREATE VIEW llm_usage AS
WITH usage AS (
  SELECT trace_id, span_id, parent_span_id, start_time, end_time,
    coalesce(gen_ai_response_model, gen_ai_request_model) AS model,
    coalesce(gen_ai_input_tokens, 0) AS input_tokens, coalesce(gen_ai_output_tokens, 0) AS output_tokens
  FROM spans WHERE gen_ai_input_tokens IS NOT NULL OR gen_ai_output_tokens IS NOT NULL),
usage_parents AS (SELECT DISTINCT trace_id, parent_span_id AS span_id FROM usage WHERE parent_span_id IS NOT NULL),
leaves AS (
  SELECT u.* FROM usage u LEFT JOIN usage_parents p ON p.trace_id = u.trace_id AND p.span_id = u.span_id
  WHERE p.span_id IS NULL)
SELECT l.trace_id, l.span_id, l.model, l.input_tokens, l.output_tokens,
  cost_usd(l.model, l.input_tokens, l.output_tokens) AS cost_usd
FROM leaves l
LEFT JOIN leaves o ON o.trace_id = l.trace_id
  AND o.input_tokens = l.input_tokens AND o.output_tokens = l.output_tokens
  AND o.span_id < l.span_id AND o.start_time <= l.end_time AND l.start_time <= o.end_time
WHERE o.span_id IS NULL;
CREATE VIEW trace_usage AS
  SELECT trace_id, count(*) AS llm_calls, sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens, sum(coalesce(cost_usd, 0.0)) AS cost_usd
  FROM llm_usage GROUP BY trace_id;
CREATE VIEW traces AS
WITH agg AS (
  SELECT trace_id, min(start_time) AS start_time, max(end_time) AS end_time, count(*) AS span_count,
    bool_or(status_code = 'ERROR') AS has_error, max(session_id) AS session_id,
    first(name ORDER BY start_time, duration_ns DESC, span_id) FILTER (WHERE parent_span_id IS NULL) AS root_name,
    min(start_time) FILTER (WHERE parent_span_id IS NULL) AS root_start,
    first(end_time ORDER BY start_time, duration_ns DESC) FILTER (WHERE parent_span_id IS NULL) AS root_end,
    first(duration_ns ORDER BY start_time, duration_ns DESC) FILTER (WHERE parent_span_id IS NULL) AS root_duration_ns
  FROM spans GROUP BY trace_id)
SELECT a.trace_id, a.root_name, coalesce(a.root_start, a.start_time) AS root_start,
  coalesce(a.root_end, a.end_time) AS root_end,
  coalesce(a.root_duration_ns, epoch_ns(a.end_time) - epoch_ns(a.start_time)) AS root_duration_ns,
  a.has_error, coalesce(t.llm_calls, 0) AS llm_calls, coalesce(t.input_tokens, 0) AS input_tokens,
  coalesce(t.output_tokens, 0) AS output_tokens, coalesce(t.cost_usd, 0.0) AS cost_usd, a.session_id
FROM agg a LEFT JOIN trace_usage t ON a.trace_id = t.trace_id;
CREATE VIEW evals AS
SELECT eval_trace_id, eval_span_id, judged_trace_id, judged_span_id, metric, score, judged_at
FROM (
  SELECT trace_id AS eval_trace_id, span_id AS eval_span_id,
    links[1]['trace_id'] AS judged_trace_id, links[1]['span_id'] AS judged_span_id,
    attributes['gen_ai.evaluation.name'] AS metric,
    try_cast(attributes['gen_ai.evaluation.score.value'] AS DOUBLE) AS score,
    start_time AS judged_at,
    row_number() OVER (PARTITION BY trace_id, span_id ORDER BY start_time) AS copy
  FROM spans WHERE attributes['gen_ai.evaluation.name'] IS NOT NULL)
WHERE copy = 1;
"""


def duckdb_views(which: str) -> str:
    if which == "after":
        return DUCKDB_VIEWS
    start, end = DUCKDB_VIEWS.index("CREATE VIEW llm_usage AS"), DUCKDB_VIEWS.index("CREATE VIEW traces AS")
    return DUCKDB_VIEWS[:start] + DUCKDB_VIEWS_BEFORE_LLM + DUCKDB_TOTALS_BEFORE + DUCKDB_VIEWS[end:]


def duckdb_connection(store: pathlib.Path, prices_toml: pathlib.Path, views: str):
    con = duckdb.connect()
    prices = tomllib.loads(prices_toml.read_text())["models"]
    con.execute("CREATE TABLE prices (model VARCHAR, input DOUBLE, output DOUBLE)")
    con.executemany("INSERT INTO prices VALUES (?, ?, ?)", [(m, p["input"], p["output"]) for m, p in prices.items()])
    con.execute("CREATE MACRO cost_usd(m, i, o) AS (SELECT (i * p.input + o * p.output) / 1e6 FROM prices p "
                "WHERE starts_with(m, p.model) ORDER BY length(p.model) DESC LIMIT 1)")
    glob = str(store / "spans" / "**" / "*.parquet").replace("'", "''")
    for stmt in duckdb_views(views).format(glob=glob, is_llm=IS_LLM_CALL).split(";"):
        if stmt.strip():
            con.execute(stmt)
    return con


def best_of(runs, fn):
    """Runs fn `runs` times; returns the fastest of each figure fn returns and fn's last value."""
    best, result = None, None
    for _ in range(runs):
        times, result = fn()
        best = times if best is None else tuple(min(a, b) for a, b in zip(best, times))
    return best, result


def duckdb_query(con, sql):
    """(query seconds, query CPU seconds), count in the open connection."""
    t, c = time.perf_counter(), time.process_time()
    n = con.execute(sql).fetchone()[0]
    return (time.perf_counter() - t, time.process_time() - c), n


def children_cpu():
    """User+sys CPU seconds of this process's finished children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def curate_run(curate, store, sql):
    """(process seconds, query seconds from curate's own log line, process CPU seconds), count."""
    env = dict(os.environ, RUST_LOG="curate=info")
    t, c = time.perf_counter(), children_cpu()
    out = subprocess.run([curate, "--store", str(store), "--all", "--sql", sql, "--json", "--log-format", "json"],
                         capture_output=True, text=True, check=True, env=env)
    process, cpu = time.perf_counter() - t, children_cpu() - c
    query = None
    for line in out.stderr.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        f = rec.get("fields", {})
        if f.get("message") == "query":
            query = (f["open_ms"] + f["plan_ms"] + f["run_ms"]) / 1000
    if query is None:
        sys.exit(f"curate printed no query log line: {out.stderr[-2000:]}")
    return (process, query, cpu), json.loads(out.stdout.splitlines()[0])["n"]


def duckdb_process(store, prices, views, sql):
    """(seconds of a fresh Python + DuckDB process running `sql`, None: views only,), count."""
    args = [sys.executable, __file__, str(store), "--prices", str(prices), "--duckdb-views", views,
            "--duckdb-count", sql or ""]
    t = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return (time.perf_counter() - t,), int(out.stdout.strip() or 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=pathlib.Path)
    ap.add_argument("--curate", default="target/release/curate")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prices", type=pathlib.Path, default=pathlib.Path("schemas/prices.toml"))
    ap.add_argument("--rules", help="comma-separated subset of the rules to run")
    ap.add_argument("--duckdb-views", choices=["before", "after"], default="after",
                    help="DuckDB translation of the views: as curate has them since the llm_usage view landed "
                         "(after, the default), or as they were before it (before: joins DuckDB runs far slower, "
                         "only to compare with figures of that time)")
    ap.add_argument("--duckdb-count", help=argparse.SUPPRESS)
    a = ap.parse_args()
    con = duckdb_connection(a.store, a.prices, a.duckdb_views)
    if a.duckdb_count is not None:  # one DuckDB process (see duckdb_process)
        if a.duckdb_count:
            print(con.execute(a.duckdb_count).fetchone()[0])
        return
    spans = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    files = sum(1 for _ in (a.store / "spans").rglob("*.parquet"))
    (start,), _ = best_of(a.runs, lambda: duckdb_process(a.store, a.prices, a.duckdb_views, None))
    print(f"store {a.store}: {spans} spans in {files} files; best of {a.runs} runs; "
          f"DuckDB process without a query (python, import, views): {start:.3f} s")
    print(f"{'rule':<22}{'curate':>10}{'duckdb':>10}{'ratio':>7}{'curate':>10}{'duckdb':>10}{'ratio':>7}"
          f"{'curate':>10}{'duckdb':>10}{'ratio':>7}{'traces':>9}")
    print(f"{'':<22}{'process s':>10}{'process s':>10}{'':>7}{'query s':>10}{'query s':>10}{'':>7}"
          f"{'CPU s':>10}{'query CPU':>10}")
    rows = []
    chosen = a.rules.split(",") if a.rules else list(RULES)
    for name in chosen:
        count_sql = f"SELECT count(*) AS n FROM ({RULES[name]})"
        (cp, cq, cc), nc = best_of(a.runs, lambda: curate_run(a.curate, a.store, count_sql))
        (dq, dc), nd = best_of(a.runs, lambda: duckdb_query(con, count_sql))
        (dp,), npr = best_of(a.runs, lambda: duckdb_process(a.store, a.prices, a.duckdb_views, count_sql))
        if not nc == nd == npr:
            sys.exit(f"{name}: curate counted {nc}, duckdb {nd} (in a fresh process {npr})")
        print(f"{name:<22}{cp:>10.3f}{dp:>10.3f}{cp / dp:>7.2f}{cq:>10.3f}{dq:>10.3f}{cq / dq:>7.2f}"
              f"{cc:>10.3f}{dc:>10.3f}{cc / dc:>7.2f}{nc:>9}")
        rows.append({"rule": name, "curate_process_s": cp, "duckdb_process_s": dp, "process_ratio": cp / dp,
                     "curate_query_s": cq, "duckdb_query_s": dq, "query_ratio": cq / dq,
                     "curate_process_cpu_s": cc, "duckdb_query_cpu_s": dc, "cpu_ratio": cc / dc,
                     "curate_process_over_duckdb_query": cp / dq, "traces": nc})
    print(json.dumps({"spans": spans, "files": files, "duckdb_start_s": start, "rules": rows}))


if __name__ == "__main__":
    main()
