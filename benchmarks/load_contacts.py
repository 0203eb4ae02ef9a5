"""Benchmark: stream N seed-shaped contacts from JSON Lines into a fresh PostgreSQL database.

Generates the file (streamed, deterministic), creates a database, migrates it, loads it with
``storage.loader.load_jsonl`` (the code path of ``campaign-dispatch load FILE.jsonl``), prints
rows/s, elapsed seconds and peak RSS, then drops the database and the file.

    .venv/bin/python benchmarks/load_contacts.py --contacts 1000000

The admin URL comes from ``BENCH_PG_ADMIN_URL`` (default: postgres on 127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.db import make_engine, make_sessionmaker, safe_identifier  # noqa: E402
from storage.fields import FIXED_FIELDS  # noqa: E402
from storage import loader  # noqa: E402
from storage.loader import load_jsonl  # noqa: E402
from storage.migrate import upgrade  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
FIRST = ["Søren", "Zoë", "Hélène", "Åse", "Noël", "José", "Ida", "Björn", "Anna", "Mads", "Freja", "Oliver"]
LAST = ["Østergaard", "Brontë", "Lefèvre", "Ødegård", "Jensen", "Nielsen", "Hansen", "Müller", "García"]
CITIES = [("København", "1165", "Denmark"), ("Aarhus", "8000", "Denmark"), ("Oslo", "0155", "Norway"),
          ("Paris", "75004", "France"), ("London", "SW1W 9EQ", "United Kingdom")]
LEVELS = ["gold", "silver", "bronze", None]


def seed_user(n: int) -> dict:
    """A seed user object (as embedded in a recipient)."""
    return {"id": n, "first_name": f"User{n}", "last_name": "Sales", "phone_number": f"+45{n:08d}",
            "job_title": "Sales Executive", "email": f"user{n}@acme.example", "email_notifications": False,
            "profile_picture": None, "system_user": False,
            "created_at": "2024-01-01 10:00:00", "updated_at": "2024-01-01 10:00:00"}


def seed_contact(rng: random.Random, n: int, users: list[dict]) -> dict:
    """One contact in the seed's recipient shape, every fixed field with its metadata."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, zip_code, country = rng.choice(CITIES)
    values = {
        "first_name": first, "last_name": last, "city": city, "zip_code": zip_code, "country": country,
        "email": f"{first.lower()}.{n}@example.com" if rng.random() > 0.05 else None,
        "address": f"Street {n % 997}" if rng.random() > 0.05 else None,
        "mobile_phone_number": f"+45{rng.randrange(10**7, 10**8)}",
    }
    consent = {ch: {"consent_given": rng.choice([True, True, True, False, None]), "updated_at": ""}
               for ch in ("email", "letter", "call", "sms")}
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "b2c": True,
        "account": None,
        "user": rng.choice(users),
        "team_id": 1 + n % 5,
        "team": None,
        "status": None,
        "fixed_fields": [
            {"id": f.id, "type": f.type, "name": f.name, "label": f.label, "value": values.get(f.name),
             "validation": f.validation, "required": f.required, "hidden": f.hidden,
             "read_only": f.read_only, "sort_order": f.sort_order}
            for f in FIXED_FIELDS
        ],
        "custom_fields": {"loyalty_level": rng.choice(LEVELS), "orders": str(rng.randrange(100))},
        "created_at": f"2025-{1 + n % 12:02d}-{1 + n % 28:02d} 09:30:00",
        "updated_at": "2025-10-01 12:00:00",
        "latest_activity_at": None,
        "social_profile": {},
        "consent": consent,
    }


def write_jsonl(path: Path, count: int, seed: int) -> None:
    """Write ``count`` contacts to ``path``, one a line, without holding them in memory."""
    rng = random.Random(seed)
    users = [seed_user(n) for n in range(1, 51)]
    with path.open("w", encoding="utf-8") as handle:
        for n in range(count):
            handle.write(json.dumps(seed_contact(rng, n, users), ensure_ascii=False))
            handle.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--reload", action="store_true", help="load the same file a second time (all updates)")
    parser.add_argument("--strategy", choices=("copy", "executemany"), default="copy",
                        help="PostgreSQL write path: COPY + INSERT .. SELECT (the loader's), or "
                             "SQLAlchemy executemany (psycopg pipeline) for comparison")
    args = parser.parse_args()
    if args.strategy == "executemany":
        loader.COPY_MIN_ROWS = 10**12

    name = safe_identifier(f"cd_bench_{os.getpid()}")
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "contacts.jsonl"
        started = time.perf_counter()
        write_jsonl(path, args.contacts, args.seed)
        generated = time.perf_counter() - started
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
                              "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"))
        engine = make_engine(admin.url.set(database=name).render_as_string(hide_password=False))
        try:
            upgrade(engine)
            runs = 2 if args.reload else 1
            for run in range(runs):
                started = time.perf_counter()
                counts = load_jsonl(make_sessionmaker(engine), path, batch_size=args.batch_size)
                elapsed = time.perf_counter() - started
                with engine.connect() as conn:
                    stored = conn.execute(text("SELECT count(*) FROM contacts")).scalar_one()
                peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                print(json.dumps({
                    "run": "insert" if run == 0 else "reload (update)",
                    "contacts": args.contacts,
                    "batch_size": args.batch_size,
                    "strategy": args.strategy,
                    "file_mib": round(path.stat().st_size / 2**20, 1),
                    "generate_s": round(generated, 1),
                    "counts": counts,
                    "rows_in_table": stored,
                    "elapsed_s": round(elapsed, 1),
                    "rows_per_s": round(args.contacts / elapsed),
                    "peak_rss_mib": round(peak_kib / 1024, 1),
                    "reproduce": f".venv/bin/python benchmarks/load_contacts.py --contacts {args.contacts} "
                                 f"--batch-size {args.batch_size} --strategy {args.strategy}"
                                 + (" --reload" if args.reload else ""),
                }, ensure_ascii=False))
        finally:
            engine.dispose()
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            admin.dispose()


if __name__ == "__main__":
    main()
