"""Every part's row, its images within a disk budget, alarms and events; CSV export."""
