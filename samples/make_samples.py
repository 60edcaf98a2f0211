#!/usr/bin/env python3
"""Deterministically (re)generate rowshift's sample data.

Usage:  python3 samples/make_samples.py

Writes, next to this script:
  shop.db          SQLite: users_v1 (1,000 rows), customers (50), orders (300)
  orders.csv       500 rows, RFC 4180 quoting, mixed date formats, messy notes
  events.parquet   2,000 rows, 4 row groups of 500, snappy (needs pyarrow;
                   skipped with a message if pyarrow is not importable)
  invalid/*.csv    one tiny CSV per failure mode (see invalid/README.md)

Only the Python 3 standard library is needed, except for events.parquet.
Every part uses its own random.Random with a fixed seed, so the output is
identical on every run (the Parquet file embeds the pyarrow version in its
"created_by" footer, so it is byte-identical only for the same pyarrow).
"""

import csv
import datetime as dt
import os
import random
import sqlite3
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------
# shared name material
# ---------------------------------------------------------------------------

# (display name, ascii slug used for the email local part)
FIRST_NAMES = [
    ("Alice", "alice"), ("Bob", "bob"), ("Carol", "carol"), ("David", "david"),
    ("Emma", "emma"), ("Farid", "farid"), ("Grace", "grace"), ("Hiro", "hiro"),
    ("Ines", "ines"), ("Jonas", "jonas"), ("Kofi", "kofi"), ("Lena", "lena"),
    ("Mateo", "mateo"), ("Nora", "nora"), ("Oskar", "oskar"), ("Priya", "priya"),
    ("Quinn", "quinn"), ("Rosa", "rosa"), ("Sven", "sven"), ("Tara", "tara"),
    ("Uma", "uma"), ("Viktor", "viktor"), ("Wen", "wen"), ("Yusuf", "yusuf"),
    ("Zara", "zara"), ("Chloé", "chloe"), ("François", "francois"),
    ("Łukasz", "lukasz"), ("Søren", "soren"), ("Göran", "goran"),
]
LAST_NAMES = [
    ("Smith", "smith"), ("Johnson", "johnson"), ("Müller", "muller"),
    ("García", "garcia"), ("Rossi", "rossi"), ("Dubois", "dubois"),
    ("Nowak", "nowak"), ("Kowalski", "kowalski"), ("Tanaka", "tanaka"),
    ("Okafor", "okafor"), ("Andersson", "andersson"), ("Novák", "novak"),
    ("Silva", "silva"), ("Yılmaz", "yilmaz"), ("Nguyen", "nguyen"),
    ("O'Brien", "obrien"), ("Smith-Jones", "smithjones"), ("Kim", "kim"),
    ("Patel", "patel"), ("Ivanova", "ivanova"),
]
# Names that must appear (exercise non-ASCII / odd word counts).
SPECIAL_NAMES = [
    ("José Álvarez", "jose.alvarez"),
    ("Zoë Brontë", "zoe.bronte"),
    ("李 小龙", "li.xiaolong"),
    ("Ørjan Øvergård", "orjan.overgard"),
    ("Cher", "cher"),                       # single word -> last_name ''
    ("Madonna", "madonna"),
    ("Björk", "bjork"),
    ("Prince", "prince"),
    ("Mary Ann Evans", "maryann.evans"),    # three words -> 3rd word dropped
    ("Juan Carlos Pérez", "juancarlos.perez"),
    ("Anne Marie Duval", "annemarie.duval"),
    ("Ludwig van Beethoven", "ludwig.beethoven"),
    ("Nguyễn Thị Minh", "nguyen.minh"),
]
EMAIL_DOMAINS = ["example.com", "mail.example.org", "Example.NET", "corp.example.io"]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "NO", "PL",
             "JP", "CN", "BR", "IN", "CA", "AU"]


def rand_ts(rng, start, end):
    """Random datetime in [start, end), whole seconds."""
    span = int((end - start).total_seconds())
    return start + dt.timedelta(seconds=rng.randrange(span))


def fmt_ts(t):
    return t.strftime("%Y-%m-%d %H:%M:%S")


def mangle_case(rng, s):
    """Randomly change the case of an email (mixed case quirk)."""
    r = rng.random()
    if r < 0.55:
        return s
    if r < 0.70:
        return s.upper()
    if r < 0.85:
        return s[:1].upper() + s[1:]
    return "".join(ch.upper() if rng.random() < 0.4 else ch for ch in s)


def flip_case(s):
    """A case variant guaranteed to differ from s (s must contain letters)."""
    up = s.upper()
    return up if up != s else s.lower()


# ---------------------------------------------------------------------------
# a. shop.db
# ---------------------------------------------------------------------------

LONG_BIO_PARAGRAPH = (
    "I have been building data pipelines for a long time 🚀. "
    "Ich mag Käse, café au lait, and naïve résumés. "
    "日本語のテキストも少し書きます。 "
    "Emoji test: 😀🎉👍🏽🇳🇴 — “curly quotes”, 'single', \"double\", tabs\tand commas, ok.\n"
)


def long_bio(rng, n_chars):
    parts = []
    i = 0
    while sum(len(p) for p in parts) < n_chars:
        i += 1
        parts.append(f"[{i}] " + LONG_BIO_PARAGRAPH)
        if rng.random() < 0.3:
            parts.append("\n")
    s = "".join(parts)[:n_chars]
    return s


SHORT_BIOS = [
    "Loves hiking.", "Coffee first ☕", "Data engineer", "Photographer 📷",
    "Reads a lot.\nWrites a little.", "Gärtnerin aus Leidenschaft",
    "Entusiasta del fútbol ⚽", "猫が好きです", "Plays the cello",
    "Runner, cook, dad", "Bonjour à tous !", "Just here for the deals",
    "Tea > coffee", "Likes \"quotes\" and, commas", "🙂",
]


def make_shop_db(path):
    rng = random.Random(20240501)
    if os.path.exists(path):
        os.remove(path)
    for suffix in ("-journal", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)

    con = sqlite3.connect(path)
    cur = con.cursor()
    cur.execute(
        "CREATE TABLE users_v1 (id INTEGER PRIMARY KEY, full_name TEXT NOT NULL, "
        "email TEXT NOT NULL, created_at TEXT NOT NULL, deleted_at TEXT, "
        "country TEXT, score REAL, bio TEXT)"
    )
    cur.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, tier TEXT)")
    cur.execute(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, "
        "amount TEXT NOT NULL, ordered_at TEXT NOT NULL)"
    )

    # ---- users_v1: exactly 1,000 rows; ids start at 1 and skip 13, 500-504
    # and 777, so the highest id is 1007.
    gaps = {13, 500, 501, 502, 503, 504, 777}
    ids = []
    i = 1
    while len(ids) < 1000:
        if i not in gaps:
            ids.append(i)
        i += 1

    # row indices (0-based) that get special names / long bios / dup emails
    special_slots = rng.sample(range(1000), len(SPECIAL_NAMES))
    special_at = dict(zip(special_slots, SPECIAL_NAMES))
    long_bio_slots = set(rng.sample([k for k in range(1000) if k not in special_at], 3))

    start = dt.datetime(2019, 1, 1)
    end = dt.datetime(2025, 1, 1)          # exclusive -> always within 2019..2024
    rows = []
    used_locals = {}
    for k, uid in enumerate(ids):
        if k in special_at:
            name, local = special_at[k]
        else:
            fn, fslug = rng.choice(FIRST_NAMES)
            ln, lslug = rng.choice(LAST_NAMES)
            name, local = f"{fn} {ln}", f"{fslug}.{lslug}"
        n = used_locals.get(local, 0)
        used_locals[local] = n + 1
        if n:
            local = f"{local}{n + 1}"
        email = mangle_case(rng, f"{local}@{rng.choice(EMAIL_DOMAINS)}")
        r = rng.random()
        if r < 0.06:
            email = " " + email
        elif r < 0.12:
            email = email + "  "
        elif r < 0.15:
            email = "  " + email + " "

        created = rand_ts(rng, start, end)
        deleted = None
        if rng.random() < 0.10:
            deleted = fmt_ts(rand_ts(rng, created, end) if created < end - dt.timedelta(seconds=2)
                             else created)

        r = rng.random()
        country = None if r < 0.06 else ("" if r < 0.10 else rng.choice(COUNTRIES))
        score = None if rng.random() < 0.08 else round(rng.uniform(0, 100), 2)

        if k in long_bio_slots:
            bio = long_bio(rng, 5000)
        else:
            r = rng.random()
            bio = None if r < 0.10 else ("" if r < 0.18 else rng.choice(SHORT_BIOS))
        rows.append([uid, name, email, fmt_ts(created), deleted, country, score, bio])

    # a few duplicate emails that differ only in case (and maybe whitespace):
    # row j gets a copy of row i's email with its case flipped.
    dup_pairs = [(10, 20), (100, 333), (250, 900), (600, 601)]
    for i_src, j_dst in dup_pairs:
        src = rows[i_src][2]
        rows[j_dst][2] = flip_case(src)

    cur.executemany("INSERT INTO users_v1 VALUES (?,?,?,?,?,?,?,?)", rows)

    # ---- customers (50) and orders (300)
    tiers = ["gold", "silver", "bronze", None]
    customers = []
    for cid in range(1, 51):
        fn, _ = rng.choice(FIRST_NAMES)
        ln, _ = rng.choice(LAST_NAMES)
        customers.append((cid, f"{fn} {ln}", rng.choice(tiers)))
    cur.executemany("INSERT INTO customers VALUES (?,?,?)", customers)

    orders = []
    for oid in range(1, 301):
        cents = rng.randrange(100, 50000)
        amount = f"{cents // 100}.{cents % 100:02d}"
        orders.append((oid, rng.randrange(1, 51), amount,
                       fmt_ts(rand_ts(rng, dt.datetime(2022, 1, 1), dt.datetime(2025, 1, 1)))))
    cur.executemany("INSERT INTO orders VALUES (?,?,?,?)", orders)

    con.commit()
    cur.execute("VACUUM")
    con.close()
    return {"users_v1": len(rows), "customers": len(customers), "orders": len(orders)}


# ---------------------------------------------------------------------------
# b. orders.csv
# ---------------------------------------------------------------------------

NOTES_PLAIN = [
    "leave at door", "gift wrap please", "call before delivery", "fragile",
    "second attempt", "Ünïcödé ñ ß", "日本語のメモ", "thanks! 🎁", "🚚💨",
    "deliver to Zoë", "Straße 5, 2. OG",
]
NOTES_COMMA = [
    "red, large", "ring bell, then knock", "Paris, France", "a,b,c",
    "one, two, three, 🎉",
]
NOTES_NEWLINE = [
    "line one\nline two", "Attn: José\nBuilding B\nFloor 3", "multi\n\nblank line",
    "ends with newline\n",
]
NOTES_QUOTE = [
    'size "XL"', 'he said "hi", then left', '"quoted at start', 'ends with quote"',
    '""', 'mixed "quote", comma\nand newline',
]


def make_orders_csv(path):
    rng = random.Random(20240502)
    header = ["order_id", "customer_email", "amount", "currency", "ordered_at", "note", "status"]
    rows = []
    counts = {"iso_date": 0, "dmy": 0, "iso_datetime": 0}
    for oid in range(1, 501):
        fn, fslug = rng.choice(FIRST_NAMES)
        ln, lslug = rng.choice(LAST_NAMES)
        email = mangle_case(rng, f"{fslug}.{lslug}@{rng.choice(EMAIL_DOMAINS)}")

        r = rng.random()
        cents = rng.randrange(1, 100000)
        if r < 0.05:
            amount = str(cents // 100 + 1)                # "20"   (0 decimals)
        elif r < 0.10:
            amount = f"{cents // 100}.{(cents % 10)}"      # "19.5" (1 decimal)
        else:
            amount = f"{cents // 100}.{cents % 100:02d}"   # "19.99"
        currency = rng.choice(["EUR", "USD", "GBP"])

        t = rand_ts(rng, dt.datetime(2023, 1, 1), dt.datetime(2025, 1, 1))
        fmt = rng.choice(["iso_date", "dmy", "iso_datetime"])
        counts[fmt] += 1
        if fmt == "iso_date":
            ordered_at = t.strftime("%Y-%m-%d")
        elif fmt == "dmy":
            ordered_at = t.strftime("%d/%m/%Y")
        else:
            ordered_at = t.strftime("%Y-%m-%dT%H:%M:%S")

        r = rng.random()
        if r < 0.25:
            note = None                                   # empty field
        elif r < 0.55:
            note = rng.choice(NOTES_PLAIN)
        elif r < 0.70:
            note = rng.choice(NOTES_COMMA)
        elif r < 0.85:
            note = rng.choice(NOTES_NEWLINE)
        else:
            note = rng.choice(NOTES_QUOTE)

        r = rng.random()
        status = "cancelled" if r < 0.10 else ("refunded" if r < 0.20 else "paid")
        rows.append([oid, email, amount, currency, ordered_at, note, status])

    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=",", quotechar='"', doublequote=True,
                       quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)   # None -> empty unquoted field
    return len(rows), counts


# ---------------------------------------------------------------------------
# c. events.parquet
# ---------------------------------------------------------------------------

def make_events_parquet(path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        print("skipping events.parquet: pyarrow is not importable "
              "(pip install pyarrow to generate it)", file=sys.stderr)
        return None

    rng = random.Random(20240503)
    n = 2000
    event_id, user_id, kind, payload, occurred_at, amount = [], [], [], [], [], []
    t = dt.datetime(2024, 1, 1, 0, 0, 0)
    for eid in range(1, n + 1):
        t = t + dt.timedelta(seconds=rng.randrange(1, 600), microseconds=rng.randrange(1_000_000))
        k = rng.choices(["view", "click", "purchase"], weights=[70, 22, 8])[0]
        uid = None if rng.random() < 0.07 else rng.randrange(1, 1001)
        if k == "purchase":
            amt = None if rng.random() < 0.05 else round(rng.uniform(1, 500), 2)
            pl = '{"sku":"SKU-%04d","qty":%d}' % (rng.randrange(10000), rng.randrange(1, 5))
        else:
            amt = None
            pl = '{"page":"/p/%d","ref":"%s"}' % (rng.randrange(1, 300),
                                                  rng.choice(["search", "email", "direct"]))
        event_id.append(eid)
        user_id.append(uid)
        kind.append(k)
        payload.append(pl)
        occurred_at.append(t)
        amount.append(amt)

    schema = pa.schema([
        pa.field("event_id", pa.int64(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=True),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("payload", pa.string(), nullable=False),
        pa.field("occurred_at", pa.timestamp("us"), nullable=False),
        pa.field("amount", pa.float64(), nullable=True),
    ])
    table = pa.Table.from_pydict(
        {"event_id": event_id, "user_id": user_id, "kind": kind, "payload": payload,
         "occurred_at": occurred_at, "amount": amount},
        schema=schema,
    )
    if os.path.exists(path):
        os.remove(path)
    pq.write_table(table, path, row_group_size=500, compression="snappy")
    return table.num_rows


# ---------------------------------------------------------------------------
# d. invalid/*.csv
# ---------------------------------------------------------------------------

INVALID_HEADER = "id,name,amount,born_on"

# file -> (lines without header, bad id, failure, assumed target column)
INVALID_FILES = {
    "int_overflow.csv": (
        ["1,Alice,10,1990-01-01",
         "2,Bob,99999999999999999999,1985-06-15",
         "3,Carol,30,1979-12-31"],
        2, "amount 99999999999999999999 does not fit a 64-bit integer",
        "amount BIGINT",
    ),
    "float_to_int_fraction.csv": (
        ["1,Alice,10,1990-01-01",
         "2,Bob,20,1985-06-15",
         "3,Carol,12.5,1979-12-31",
         "4,Dave,40,2000-02-29"],
        3, "amount 12.5 has a fractional part where an integer is expected",
        "amount BIGINT",
    ),
    "bad_date.csv": (
        ["1,Alice,10,1990-01-01",
         "2,Bob,20,2023-02-30",
         "3,Carol,30,2000-02-29"],
        2, "born_on 2023-02-30 is not a real calendar date",
        "born_on DATE",
    ),
    "null_in_not_null.csv": (
        ["1,Alice,10,1990-01-01",
         "2,Bob,20,1985-06-15",
         "3,,30,1979-12-31",
         "4,Dave,40,2000-02-29"],
        3, "name is empty (NULL) but the column is NOT NULL",
        "name VARCHAR(255) NOT NULL",
    ),
    "ragged_row.csv": (
        ["1,Alice,10,1990-01-01",
         "2,Bob,20,1985-06-15,extra",
         "3,Carol,30,1979-12-31"],
        2, "row has 5 fields, header has 4",
        "(any)",
    ),
    "too_long.csv": (
        ["1,Alice,10,1990-01-01",
         "2," + ("N" + "abcdefghij" * 30)[:300] + ",20,1985-06-15",
         "3,Carol,30,1979-12-31"],
        2, "name is 300 characters, longer than VARCHAR(255)",
        "name VARCHAR(255)",
    ),
    # "\udcff" is written as the single byte 0xFF (surrogateescape): not UTF-8.
    "invalid_utf8.csv": (
        ["1,Alice,10,1990-01-01",
         "2,B\udcffob,20,1985-06-15",
         "3,Carol,30,1979-12-31"],
        2, "name holds the byte 0xFF, which is not UTF-8",
        "name VARCHAR(255)",
    ),
    "timestamp_without_zone.csv": (
        ["1,Alice,10,1990-01-01T08:00:00Z",
         "2,Bob,20,1985-06-15 09:30:00",
         "3,Carol,30,1979-12-31 23:00:00+01:00"],
        2, "born_on 1985-06-15 09:30:00 has no time zone, and the column declares none",
        "born_on TIMESTAMPTZ",
    ),
    "decimal_scale.csv": (
        ["1,Alice,10.50,1990-01-01",
         "2,Bob,20.25,1985-06-15",
         "3,Carol,1.005,1979-12-31",
         "4,Dave,0.99,2000-02-29",
         "5,Eve,100,1995-07-04"],
        3, "amount 1.005 has 3 decimal places; DECIMAL(10,2) allows 2",
        "amount DECIMAL(10,2)",
    ),
}


def make_invalid(dirpath):
    os.makedirs(dirpath, exist_ok=True)
    readme = [
        "# Invalid CSV samples",
        "",
        "Generated by `samples/make_samples.py`; do not edit by hand.",
        "",
        "Each file has the header `id,name,amount,born_on`, `\\n` line endings, and",
        "exactly one bad row; every other row is valid for the target schema",
        "",
        "    id BIGINT NOT NULL, name VARCHAR(255) NOT NULL,",
        "    amount BIGINT (or DECIMAL(10,2) for decimal_scale.csv),",
        "    born_on DATE (TIMESTAMPTZ for timestamp_without_zone.csv)",
        "",
        "| file | bad row id | column that fails | failure |",
        "| --- | --- | --- | --- |",
    ]
    for name, (lines, bad_id, failure, col) in INVALID_FILES.items():
        with open(os.path.join(dirpath, name), "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
            f.write(INVALID_HEADER + "\n")
            for line in lines:
                f.write(line + "\n")
        readme.append(f"| `{name}` | {bad_id} | {col} | {failure} |")
    readme.append("")
    with open(os.path.join(dirpath, "README.md"), "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(readme))
    return sorted(INVALID_FILES)


def main():
    counts = make_shop_db(os.path.join(HERE, "shop.db"))
    print(f"shop.db: {counts}")
    n, fmts = make_orders_csv(os.path.join(HERE, "orders.csv"))
    print(f"orders.csv: {n} rows, ordered_at formats {fmts}")
    n = make_events_parquet(os.path.join(HERE, "events.parquet"))
    if n is not None:
        print(f"events.parquet: {n} rows in 4 row groups")
    files = make_invalid(os.path.join(HERE, "invalid"))
    print(f"invalid/: {', '.join(files)} + README.md")


if __name__ == "__main__":
    main()
