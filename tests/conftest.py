"""Suite-wide settings: Qt runs offscreen, and nothing here depends on ../shared data."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "2")
