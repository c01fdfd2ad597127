#!/usr/bin/env python3
"""Reads files written by Weir's `parquet` sink with real readers outside Rust (pyarrow and
DuckDB) and checks them against what the test expects.

Usage: check_parquet.py LOGS_DIR METRICS_DIR EXPECTED_JSON
EXPECTED_JSON: {"rows": n, "per_partition": {"dt/service": n}, "sum_i": n, "nulls_n": n,
                "metric_rows": n}
Exits non-zero with a message naming the first mismatch.
"""
import glob
import json
import os
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq


# A UTC timestamp with nanoseconds: DuckDB 1.x names it after its microsecond type,
# DuckDB 2 keeps the nanoseconds.
TSTZ = ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ_NS")


def fail(msg):
    print(f"check_parquet: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def main():
    logs_dir, metrics_dir, expected = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    files = sorted(glob.glob(os.path.join(logs_dir, "**", "*.parquet"), recursive=True))
    check(files, f"no parquet files under {logs_dir}")
    check(not glob.glob(os.path.join(logs_dir, "**", "*.tmp"), recursive=True), "tmp files left")

    # pyarrow: every file opens, has statistics, and the documented Arrow types.
    want = {
        "timestamp": pa.timestamp("ns", tz="UTC"),
        "i": pa.int64(),
        "f": pa.float64(),
        "b": pa.bool_(),
        "msg": pa.string(),
        "service": pa.string(),
        "arr": pa.list_(pa.int64()),
        "tags": pa.list_(pa.string()),
        "obj": pa.struct([
            ("a", pa.int64()),
            ("inner", pa.struct([("opt", pa.string()), ("x", pa.float64())])),
            ("s", pa.string()),
        ]),
    }
    rows = 0
    for f in files:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        for name, t in want.items():
            check(name in schema.names, f"{f}: no column {name} in {schema}")
            got = schema.field(name).type
            check(got == t, f"{f}: column {name} is {got}, expected {t}")
        md = pf.metadata
        for rg in range(md.num_row_groups):
            col = md.row_group(rg).column(schema.names.index("i"))
            check(col.is_stats_set and col.statistics.has_min_max,
                  f"{f}: row group {rg} has no min/max statistics for `i`")
        rows += md.num_rows
        pf.read()  # every page decodes
    check(rows == expected["rows"], f"pyarrow counted {rows} rows, expected {expected['rows']}")
    table = pq.read_table(files[0])
    check(table.num_rows > 0, f"{files[0]} is empty")

    # DuckDB: Hive partitions seen as columns, types as documented, values add up.
    con = duckdb.connect()
    pattern = os.path.join(logs_dir, "**", "*.parquet")
    src = f"read_parquet('{pattern}', hive_partitioning=true, union_by_name=true)"
    desc = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    for col, t in {
        "timestamp": TSTZ,
        "i": "BIGINT",
        "f": "DOUBLE",
        "b": "BOOLEAN",
        "msg": "VARCHAR",
        "arr": "BIGINT[]",
        "tags": "VARCHAR[]",
    }.items():
        check(desc.get(col) in (t if isinstance(t, tuple) else (t,)), f"DuckDB: column {col} is {desc.get(col)}, expected {t}")
    check(desc.get("obj", "").startswith("STRUCT("), f"DuckDB: obj is {desc.get('obj')}")
    check("dt" in desc, f"DuckDB: no partition column dt in {desc}")
    (n,) = con.execute(f"SELECT count(*) FROM {src}").fetchone()
    check(n == expected["rows"], f"DuckDB counted {n} rows, expected {expected['rows']}")
    # `service` is both a field and a partition key; DuckDB keeps the file's column. `part` is
    # only a partition key.
    got = {
        f"{dt}/{part}": c
        for dt, part, c in con.execute(
            f"SELECT CAST(dt AS VARCHAR), part, count(*) FROM {src} GROUP BY ALL").fetchall()
    }
    check(got == expected["per_partition"],
          f"DuckDB rows per partition {got}, expected {expected['per_partition']}")
    (s,) = con.execute(f"SELECT sum(i) FROM {src}").fetchone()
    check(s == expected["sum_i"], f"DuckDB sum(i) = {s}, expected {expected['sum_i']}")
    (nulls,) = con.execute(f"SELECT count(*) FROM {src} WHERE n IS NULL").fetchone()
    check(nulls == expected["nulls_n"], f"DuckDB: {nulls} null n, expected {expected['nulls_n']}")
    (x,) = con.execute(f"SELECT sum(obj.inner.x) FROM {src}").fetchone()
    check(abs(x - expected["sum_x"]) < 1e-6, f"DuckDB sum(obj.inner.x) = {x}")
    (l,) = con.execute(f"SELECT sum(len(arr)) FROM {src}").fetchone()
    check(l == expected["sum_len_arr"], f"DuckDB sum(len(arr)) = {l}")

    # The metrics long format.
    mpattern = os.path.join(metrics_dir, "**", "*.parquet")
    msrc = f"read_parquet('{mpattern}')"
    mdesc = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {msrc}").fetchall()}
    for col, t in {
        "timestamp": TSTZ,
        "name": "VARCHAR",
        "namespace": "VARCHAR",
        "tags": "MAP(VARCHAR, VARCHAR)",
        "kind": "VARCHAR",
        "metric_type": "VARCHAR",
        "value": "DOUBLE",
        "count": "UBIGINT",
        "sum": "DOUBLE",
        "statistic": "VARCHAR",
        "set_values": "VARCHAR[]",
    }.items():
        check(mdesc.get(col) in (t if isinstance(t, tuple) else (t,)), f"DuckDB metrics: {col} is {mdesc.get(col)}, expected {t}")
    (m,) = con.execute(f"SELECT count(*) FROM {msrc}").fetchone()
    check(m == expected["metric_rows"], f"DuckDB: {m} metric rows, expected {expected['metric_rows']}")
    (mv,) = con.execute(
        f"SELECT sum(value) FROM {msrc} WHERE name = 'events' AND tags['service'] = 'cart'"
    ).fetchone()
    check(mv == expected["cart_count"], f"DuckDB: cart counter sum {mv}, expected {expected['cart_count']}")
    mt = pq.ParquetFile(sorted(glob.glob(mpattern, recursive=True))[0]).schema_arrow
    check(mt.field("tags").type == pa.map_(pa.string(), pa.string()),
          f"pyarrow metrics: tags is {mt.field('tags').type}")
    print(f"check_parquet: ok ({rows} rows in {len(files)} files, {m} metric rows)")


main()
