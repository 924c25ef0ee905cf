"""Every part's row, its images within a disk budget, alarms and events; CSV export.

``store`` holds ``Records`` (the rows and their writer thread), ``images`` the image store
with its disk budget and free-space reserve, ``export`` the CSV export, ``lock`` the
one-station-per-database lock, ``schema`` the SQL, and ``rows`` what one part's row is.
"""

from station.records.export import export_csv
from station.records.rows import PartRecord, RecordsError
from station.records.store import Records  # the package's public names: import them from here

__all__ = [
    "PartRecord",
    "Records",
    "RecordsError",
    "export_csv",
]
