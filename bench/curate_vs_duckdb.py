#!/usr/bin/env python3
"""Rule queries of `curate` (DataFusion) against the same SQL run by DuckDB on the same files.

    bench/curate_vs_duckdb.py STORE_DIR [--curate target/release/curate] [--runs 3]

DuckDB gets the views of curate/src/catalog.rs translated once (macros make the rule SQL
identical in both engines: arrow_cast(ts, 'Int64') -> epoch_ns, cost_usd -> a price-table
lookup). Each rule is timed as `SELECT count(*) FROM (<rule SQL>)` over the whole store: for
curate, the whole process (`curate --sql ... --all`), best of --runs; for DuckDB, the query in
an open connection after the views exist (process start excluded, which favours DuckDB).
Prints a table, and checks both engines count the same traces. Needs the .venv (duckdb).
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time
import tomllib

import duckdb

RULES = {
    "slow": "SELECT trace_id FROM traces WHERE root_duration_ns > 5000000000",
    "costly (0.01 USD)": "SELECT trace_id FROM traces WHERE cost_usd > 0.01",
    "costly (3000 tokens)": "SELECT trace_id FROM traces WHERE input_tokens + output_tokens > 3000",
    "errors": "SELECT trace_id FROM traces WHERE has_error",
    "quick-followup": (
        "SELECT DISTINCT b.trace_id FROM traces a JOIN traces b ON a.session_id = b.session_id "
        "AND a.trace_id <> b.trace_id WHERE arrow_cast(b.root_start, 'Int64') - arrow_cast(a.root_end, 'Int64') >= 0 "
        "AND arrow_cast(b.root_start, 'Int64') - arrow_cast(a.root_end, 'Int64') < 10000000000"
    ),
    "negative-feedback": (
        "SELECT DISTINCT trace_id FROM spans WHERE try_cast(attributes['feedback.score'] AS DOUBLE) < 0 "
        "OR lower(attributes['feedback.sentiment']) IN ('negative', 'thumbs_down', 'down')"
    ),
}

IS_LLM_CALL = ("(gen_ai_operation_name IN ('chat', 'text_completion', 'generate_content', 'completion') "
               "OR attributes['openinference.span.kind'] = 'LLM' "
               "OR gen_ai_input_tokens IS NOT NULL OR gen_ai_output_tokens IS NOT NULL)")

DUCKDB_VIEWS = """
CREATE MACRO arrow_cast(x, t) AS epoch_ns(x);
CREATE VIEW spans AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true,
  hive_types = {{'tenant': VARCHAR, 'date': VARCHAR, 'hour': VARCHAR}});
CREATE VIEW llm_calls AS
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
CREATE VIEW traces AS
WITH totals AS (
  SELECT trace_id, count(*) AS llm_calls, sum(coalesce(input_tokens, 0)) AS input_tokens,
    sum(coalesce(output_tokens, 0)) AS output_tokens, sum(coalesce(cost_usd, 0.0)) AS cost_usd
  FROM llm_calls WHERE usage_counted GROUP BY trace_id),
agg AS (
  SELECT trace_id, min(start_time) AS start_time, max(end_time) AS end_time, count(*) AS span_count,
    bool_or(status_code = 'ERROR') AS has_error, max(session_id) AS session_id,
    first(name ORDER BY start_time, span_id) FILTER (WHERE parent_span_id IS NULL) AS root_name,
    first(start_time ORDER BY start_time, span_id) FILTER (WHERE parent_span_id IS NULL) AS root_start,
    first(end_time ORDER BY start_time, span_id) FILTER (WHERE parent_span_id IS NULL) AS root_end,
    first(duration_ns ORDER BY start_time, span_id) FILTER (WHERE parent_span_id IS NULL) AS root_duration_ns
  FROM spans GROUP BY trace_id)
SELECT a.trace_id, a.root_name, coalesce(a.root_start, a.start_time) AS root_start,
  coalesce(a.root_end, a.end_time) AS root_end,
  coalesce(a.root_duration_ns, epoch_ns(a.end_time) - epoch_ns(a.start_time)) AS root_duration_ns,
  a.has_error, coalesce(t.llm_calls, 0) AS llm_calls, coalesce(t.input_tokens, 0) AS input_tokens,
  coalesce(t.output_tokens, 0) AS output_tokens, coalesce(t.cost_usd, 0.0) AS cost_usd, a.session_id
FROM agg a LEFT JOIN totals t ON a.trace_id = t.trace_id;
"""


def duckdb_connection(store: pathlib.Path, prices_toml: pathlib.Path):
    con = duckdb.connect()
    prices = tomllib.loads(prices_toml.read_text())["models"]
    con.execute("CREATE TABLE prices (model VARCHAR, input DOUBLE, output DOUBLE)")
    con.executemany("INSERT INTO prices VALUES (?, ?, ?)", [(m, p["input"], p["output"]) for m, p in prices.items()])
    con.execute("CREATE MACRO cost_usd(m, i, o) AS (SELECT (i * p.input + o * p.output) / 1e6 FROM prices p "
                "WHERE starts_with(m, p.model) ORDER BY length(p.model) DESC LIMIT 1)")
    glob = str(store / "spans" / "**" / "*.parquet").replace("'", "''")
    for stmt in DUCKDB_VIEWS.format(glob=glob, is_llm=IS_LLM_CALL).split(";"):
        if stmt.strip():
            con.execute(stmt)
    return con


def best_of(runs, fn):
    best, result = None, None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        d = time.perf_counter() - t
        best = d if best is None else min(best, d)
    return best, result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("store", type=pathlib.Path)
    ap.add_argument("--curate", default="target/release/curate")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prices", type=pathlib.Path, default=pathlib.Path("schemas/prices.toml"))
    a = ap.parse_args()
    con = duckdb_connection(a.store, a.prices)
    spans = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    print(f"store {a.store}: {spans} spans; best of {a.runs} runs")
    print(f"{'rule':<22}{'curate s':>10}{'duckdb s':>10}{'ratio':>8}{'traces':>9}")
    rows = []
    for name, sql in RULES.items():
        count_sql = f"SELECT count(*) AS n FROM ({sql})"

        def run_curate():
            out = subprocess.run([a.curate, "--store", str(a.store), "--all", "--sql", count_sql, "--json"],
                                 capture_output=True, text=True, check=True)
            return json.loads(out.stdout.splitlines()[0])["n"]

        tc, nc = best_of(a.runs, run_curate)
        td, nd = best_of(a.runs, lambda: con.execute(count_sql).fetchone()[0])
        if nc != nd:
            sys.exit(f"{name}: curate counted {nc}, duckdb {nd}")
        print(f"{name:<22}{tc:>10.3f}{td:>10.3f}{tc / td:>8.2f}{nc:>9}")
        rows.append({"rule": name, "curate_s": tc, "duckdb_s": td, "ratio": tc / td, "traces": nc})
    print(json.dumps({"spans": spans, "rules": rows}))


if __name__ == "__main__":
    main()
