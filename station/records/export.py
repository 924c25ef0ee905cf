"""CSV export of the records, readable beside a running station, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

from station.records.rows import RecordsError, parse_since
from station.records.schema import part_select_list

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> object:
    """A text cell a spreadsheet would run as a formula gets a leading ``'`` (OWASP rule).

    Product names, reasons and errors come from recipes and models, so ``=HYPERLINK(...)``
    must reach the spreadsheet as text. Numbers stay numbers (-0.5 is not a formula).
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def export_csv(database: str | Path, out: str | Path, since: str | float | None = None) -> int:
    """Write the parts (optionally since a time) to CSV; returns the number of rows.

    Text cells that start like a formula are escaped (:func:`csv_safe`). Problems with the
    database or the output file are one-line ``RecordsError``s naming the file."""
    db = Path(database)
    if db.is_dir():
        raise RecordsError(f"records database {db}: is a folder, not a database file")
    if not db.is_file():
        raise RecordsError(f"records database {db} does not exist")
    t0 = parse_since(since)
    try:  # read-only, so exporting works beside a running station
        conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)  # as_uri escapes
    except sqlite3.Error as exc:
        raise RecordsError(f"records database {db}: cannot open: {exc}") from None
    try:
        args: tuple = ()
        try:
            sql = (f"SELECT id, {part_select_list(conn)}, (SELECT group_concat(path, ';') FROM "
                   "images WHERE images.part_row = parts.id AND deleted_at IS NULL) AS images "
                   "FROM parts")
            if t0 is not None:
                sql += " WHERE time_epoch >= ?"
                args = (t0,)
            cur = conn.execute(sql + " ORDER BY id", args)
        except sqlite3.DatabaseError as exc:
            raise RecordsError(f"{db} is not a station records database: {exc}") from exc
        return _write_csv(cur, Path(out))
    finally:
        conn.close()


def _write_csv(cur: sqlite3.Cursor, out: Path) -> int:
    header = [d[0] for d in cur.description]
    n = 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            for row in cur:
                w.writerow([csv_safe(v) for v in row])
                n += 1
    except OSError as exc:
        raise RecordsError(f"{out}: cannot write the CSV: {exc.strerror or exc}") from None
    return n
