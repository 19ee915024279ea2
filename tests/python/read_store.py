#!/usr/bin/env python3
"""Read a trace2eval store's span Parquet files with DuckDB and with pyarrow, as a user would.

    read_store.py STORE_DIR

Files: STORE_DIR/spans/tenant=<t>/date=YYYY-MM-DD/hour=HH/<name>.parquet (partition columns only
in the path). Prints one JSON object on stdout:
  {"duckdb":  {"rows": N, "spans": [[trace_id, span_id, name, tenant, "YYYY-MM-DD", hour], ...]},
   "pyarrow": {...same...},
   "duckdb_attr_sample": {attribute map of the first span by (trace_id, span_id)}}
Spans are sorted. Binary ids, if any, are rendered as hex.
"""
import json
import pathlib
import sys

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds


def text(v):
    return v.hex() if isinstance(v, (bytes, bytearray)) else v


def as_dict(m):
    # DuckDB returns a MAP as a dict (newer) or as {"key": [...], "value": [...]} (older).
    if isinstance(m, dict) and set(m) == {"key", "value"} and isinstance(m["key"], list):
        return dict(zip(m["key"], m["value"]))
    return dict(m) if m is not None else None


def read_duckdb(spans_dir):
    con = duckdb.connect()
    glob = str(spans_dir / "**" / "*.parquet").replace("'", "''")
    # hive_types pins the partition types: auto-detection would turn tenant=0042 into a number.
    src = (f"read_parquet('{glob}', hive_partitioning=true, "
           "hive_types={'tenant': VARCHAR, 'date': DATE, 'hour': INTEGER})")
    rows = con.execute(
        f"SELECT trace_id, span_id, name, tenant, CAST(date AS VARCHAR), hour FROM {src}").fetchall()
    first = con.execute(f"SELECT attributes FROM {src} ORDER BY trace_id, span_id LIMIT 1").fetchone()
    spans = sorted([text(t), text(s), n, ten, d, int(h)] for t, s, n, ten, d, h in rows)
    return {"rows": len(rows), "spans": spans}, as_dict(first[0])


def read_pyarrow(spans_dir):
    part = ds.partitioning(
        pa.schema([("tenant", pa.string()), ("date", pa.string()), ("hour", pa.int32())]), flavor="hive")
    table = ds.dataset(str(spans_dir), format="parquet", partitioning=part).to_table(
        columns=["trace_id", "span_id", "name", "tenant", "date", "hour"])
    spans = sorted([text(r["trace_id"]), text(r["span_id"]), r["name"], r["tenant"], r["date"], int(r["hour"])]
                   for r in table.to_pylist())
    return {"rows": table.num_rows, "spans": spans}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: read_store.py STORE_DIR")
    spans_dir = pathlib.Path(sys.argv[1]) / "spans"
    if not any(spans_dir.rglob("*.parquet")):
        sys.exit(f"read_store: no Parquet files under {spans_dir}")
    duck, sample = read_duckdb(spans_dir)
    out = {"duckdb": duck, "pyarrow": read_pyarrow(spans_dir), "duckdb_attr_sample": sample}
    json.dump(out, sys.stdout, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
