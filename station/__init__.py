"""The inspection station's runtime (torch-free): see docs/ARCHITECTURE.md."""

import os as _os

# OpenCV prints a warning line for every failed open of a missing camera, on each retry; the
# station raises its own alarm for that ("camera lost"), so only OpenCV's errors are shown.
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
