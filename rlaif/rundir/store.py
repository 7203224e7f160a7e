"""The run's record store: SQLite, one row per unit of work, keyed by what produced it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError


def record_key(**parts) -> str:
    """Hash of everything that determines a record: stage, input key, principle, template, model, sampling, seed."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@contextmanager
def readable(path: str | Path):
    """SQLite errors on `path` (not a database, truncated, disk full) become one line naming the file."""
    try:
        yield
    except sqlite3.DatabaseError as e:
        raise UserError(f"the record store cannot be used ({e}); if it is damaged, move it away to start afresh "
                        "(its records are then computed again)", str(path)) from None


def check_store(path: str | Path) -> None:
    """Fail now, before any model loads, when `path` is not an SQLite database (a cheap check: page 1 only)."""
    with readable(path):
        db = sqlite3.connect(path, timeout=60)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            db.close()


class Store:
    """Records are written once per key and never updated, so a rerun cannot duplicate them."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with readable(self.path):
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")  # a kill -9 loses at most the open transaction
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS records ("
                " key TEXT PRIMARY KEY, stage TEXT NOT NULL, data TEXT NOT NULL,"
                " created REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0))"
            )
            self.db.execute("CREATE INDEX IF NOT EXISTS records_stage ON records(stage)")
            self.db.commit()

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        """The stored records among `keys`, by key."""
        found: dict[str, dict] = {}
        with readable(self.path):
            for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, data in self.db.execute(f"SELECT key, data FROM records WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(data)
        return found

    def put_many(self, stage: str, records: dict[str, dict]) -> None:
        """Commit a batch of records in one transaction; keys already present are left as they are."""
        with readable(self.path), self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO records (key, stage, data) VALUES (?, ?, ?)",
                [(k, stage, json.dumps(v, ensure_ascii=False)) for k, v in records.items()],
            )

    def count(self, stage: str | None = None) -> int:
        """How many records the store holds (of one stage)."""
        with readable(self.path):
            if stage is None:
                return self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            return self.db.execute("SELECT COUNT(*) FROM records WHERE stage = ?", (stage,)).fetchone()[0]

    def close(self) -> None:
        """Close the database."""
        self.db.close()
