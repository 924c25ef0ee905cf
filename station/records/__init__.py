"""Every part's row, its images within a disk budget, alarms and events; CSV export."""

from station.records.store import (  # the package's public names: import them from station.records
    PartRecord,
    Records,
    RecordsError,
    export_csv,
)

__all__ = [
    "PartRecord",
    "Records",
    "RecordsError",
    "export_csv",
]
