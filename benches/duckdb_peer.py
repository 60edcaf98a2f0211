#!/usr/bin/env python3
"""DuckDB peer for rowshift benchmarks.

Usage: python3 benches/duckdb_peer.py INPUT_CSV OUTPUT_PARQUET [THREADS]

Runs the same users CSV -> Parquet job rowshift is benchmarked on, timing the
COPY statement only (wall clock, time.perf_counter), then prints exactly one
JSON line to stdout:  {"seconds": <float>, "rows_written": <int>}

Input CSV header: id,full_name,email,created_at,deleted_at,country,score,note
With all_varchar=true, read_csv's default nullstr is '' so an empty
deleted_at field (quoted or not) reads as NULL; no nullstr option is needed.

Exit codes: 0 ok, 2 usage error, 3 duckdb not installed.
"""

import json
import sys
import time


def sql_str(s):
    """Quote a Python string as a SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def main(argv):
    if len(argv) not in (3, 4):
        print("usage: python3 benches/duckdb_peer.py INPUT_CSV OUTPUT_PARQUET [THREADS]",
              file=sys.stderr)
        return 2
    input_csv, output_parquet = argv[1], argv[2]
    try:
        threads = int(argv[3]) if len(argv) == 4 else 2
        if threads < 1:
            raise ValueError
    except ValueError:
        print(f"THREADS must be a positive integer, got {argv[3]!r}", file=sys.stderr)
        return 2

    try:
        import duckdb
    except ImportError:
        print("duckdb not installed: pip install duckdb", file=sys.stderr)
        return 3

    con = duckdb.connect()  # in-memory
    con.execute(f"PRAGMA threads={threads}")

    job = (
        "COPY (SELECT CAST(id AS BIGINT) AS id, "
        "lower(trim(email)) AS email, "
        "split_part(full_name, ' ', 1) AS first_name, "
        "split_part(full_name, ' ', 2) AS last_name, "
        "CAST(created_at AS DATE) AS signup_on "
        f"FROM read_csv({sql_str(input_csv)}, header=true, all_varchar=true) "
        "WHERE deleted_at IS NULL) "
        f"TO {sql_str(output_parquet)} (FORMAT parquet, COMPRESSION snappy)"
    )

    start = time.perf_counter()
    con.execute(job)
    seconds = time.perf_counter() - start

    rows_written = con.execute(
        f"SELECT count(*) FROM read_parquet({sql_str(output_parquet)})"
    ).fetchone()[0]
    con.close()

    print(json.dumps({"seconds": seconds, "rows_written": int(rows_written)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
