"""``station export-records``: the parts table of a records database as CSV, for a spreadsheet."""

from __future__ import annotations

import argparse
import sys

from station.records import RecordsError, export_csv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="the station's records database (SQLite)")
    parser.add_argument("--csv", required=True, help="CSV file to write")
    parser.add_argument("--since", default=None,
                        help="only parts inspected at or after this ISO date/time "
                             "(e.g. 2026-11-23 or 2026-11-23T06:00:00; no zone = local time)")


def run(args: argparse.Namespace) -> int:
    try:
        n = export_csv(args.db, args.csv, args.since)
    except (RecordsError, ValueError) as exc:
        print(f"station export-records: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {n} part(s) to {args.csv}")
    return 0
