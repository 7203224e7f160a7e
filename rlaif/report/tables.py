"""Plain data -> table cells for the report: numbers rounded, nesting flattened, long text cut."""

from __future__ import annotations

import json
import math

MAX_CELL = 240  # characters of free text shown in one cell


def number(value) -> float | None:
    """A finite int or float as float; anything else (bool, None, text, NaN) as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def cell(value, limit: int = MAX_CELL) -> str:
    """One value as the text of a table cell."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (list, tuple, dict)) for v in value):
        text = ", ".join(cell(v) for v in value)
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested mappings as (dotted key, value) pairs; lists stay values."""
    out = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += flatten(value, name + ".")
        else:
            out.append((name, value))
    return out


def table(title: str, columns: list[str], rows: list[list], note: str | None = None) -> dict:
    """A table for the template: every cell already text."""
    return {"title": title, "columns": list(columns), "rows": [[cell(v) for v in row] for row in rows], "note": note}


def key_values(title: str, data: dict, skip: tuple[str, ...] = ()) -> dict:
    """A two-column table of a (flattened) mapping."""
    return table(title, ["key", "value"], [[k, v] for k, v in flatten(data) if k.split(".")[0] not in skip])


def records(title: str, rows: list[dict], first: tuple[str, ...] = (), skip: tuple[str, ...] = (), limit: int = 200) -> dict:
    """A table of dicts: the union of their keys as columns (`first` ones first), at most `limit` rows."""
    columns = [k for k in first if any(k in r for r in rows)]
    for row in rows:
        columns += [k for k in row if k not in columns and k not in skip]
    more = f"first {limit} of {len(rows)} rows" if len(rows) > limit else None
    return table(title, columns, [[row.get(k) for k in columns] for row in rows[:limit]], more)
