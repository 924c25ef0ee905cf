"""USB / V4L2 / DirectShow cameras through ``cv2.VideoCapture``.

Drivers accept or silently ignore settings as they please, so every setting is read back
and the ones that did not take are listed in ``info.unapplied`` for the operator to see.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import cv2

from station.sources.base import Frame, FrameSource, SourceError, check_output, to_output

BACKENDS: dict[str, int] = {
    "any": cv2.CAP_ANY,
    "v4l2": cv2.CAP_V4L2,
    "dshow": cv2.CAP_DSHOW,
    "msmf": cv2.CAP_MSMF,
    "avfoundation": cv2.CAP_AVFOUNDATION,
    "gstreamer": cv2.CAP_GSTREAMER,
    "ffmpeg": cv2.CAP_FFMPEG,
}


def parse_backend(name: str | None) -> int:
    """Map the recipe's backend name to OpenCV's constant, refusing unknown names."""
    key = (name or "any").strip().lower()
    if key not in BACKENDS:
        raise SourceError(
            f"camera backend {name!r} is unknown; expected one of {', '.join(BACKENDS)}"
        )
    return BACKENDS[key]


def parse_device(device: str | int | None) -> str | int:
    """``"0"`` or ``0`` is a camera index; anything else is a path or URL."""
    if device is None or device == "":
        return 0
    if isinstance(device, int):
        return device
    text = str(device).strip()
    return int(text) if text.isdigit() else text


def _exposure_to_driver(exposure_us: float, backend: str) -> float:
    # V4L2 counts exposure in units of 100 us; DirectShow / MSMF in log2(seconds).
    if backend in ("dshow", "msmf"):
        return float(round(math.log2(exposure_us / 1e6)))
    return exposure_us / 100.0


class OpenCVCameraSource(FrameSource):
    """A camera (index or device path) or stream URL opened with ``cv2.VideoCapture``.

    ``gain_db`` is passed to ``CAP_PROP_GAIN`` as is: OpenCV drivers take gain in their own
    units, so the value is the driver's, and the report says so if it did not take.
    ``fourcc`` asks the driver for a stream format (e.g. 'MJPG' for full fps over USB 2);
    ``output`` ('mono8' / 'bgr8' / '') is the pixel format handed to the pipeline.
    """

    def __init__(
        self,
        device: str | int | None = 0,
        *,
        backend: str = "any",
        width: int = 0,
        height: int = 0,
        fps: float = 0.0,
        exposure_us: float = 0.0,
        gain_db: float | None = None,
        fourcc: str = "",
        output: str = "",
    ) -> None:
        self.device = parse_device(device)
        self.backend = (backend or "any").strip().lower()
        self._backend_id = parse_backend(self.backend)
        super().__init__(f"camera:{self.device}")
        self.width, self.height, self.fps = int(width or 0), int(height or 0), float(fps or 0)
        self.exposure_us = float(exposure_us or 0.0)
        self.gain = gain_db
        self.fourcc = (fourcc or "").strip()
        self.output = check_output(output)
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        self.close()
        if self.fourcc and len(self.fourcc) != 4:
            raise SourceError(
                f"camera fourcc {self.fourcc!r}: OpenCV cameras take a FOURCC "
                "of 4 characters, e.g. 'MJPG' or 'YUYV'"
            )
        cap = cv2.VideoCapture(self.device, self._backend_id)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {self.device!r} (backend {self.backend}) cannot be opened")
        self._cap = cap
        self._info.unapplied = self._apply_settings(cap)
        ok, image = cap.read()
        if not ok or image is None:
            self.close()
            raise SourceError(f"camera {self.device!r} opened but delivers no frames")
        self._info.height, self._info.width = image.shape[:2]
        self._info.fps = float(cap.get(cv2.CAP_PROP_FPS) or self.fps or 0.0)

    def _apply_settings(self, cap: cv2.VideoCapture) -> list[str]:
        refused: list[str] = []

        def try_set(label: str, prop: int, value: float, tol: float = 0.5) -> None:
            accepted = cap.set(prop, value)
            got = cap.get(prop)
            if not accepted or abs(got - value) > tol:
                refused.append(f"{label}={value:g} (driver reports {got:g})")

        if self.fourcc:
            code = cv2.VideoWriter.fourcc(*self.fourcc)
            try_set(f"fourcc {self.fourcc}", cv2.CAP_PROP_FOURCC, code, tol=0)
        if self.width:
            try_set("width", cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            try_set("height", cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            try_set("fps", cv2.CAP_PROP_FPS, self.fps, tol=0.05 * self.fps + 0.01)
        if self.exposure_us:
            manual = 0.25 if self.backend in ("dshow", "msmf") else 1.0  # V4L2: 1 = manual
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, manual)
            value = _exposure_to_driver(self.exposure_us, self.backend)
            try_set(f"exposure_us {self.exposure_us:g} as", cv2.CAP_PROP_EXPOSURE, value,
                    tol=0.05 * abs(value) + 0.01)
        if self.gain is not None:
            try_set("gain (driver units)", cv2.CAP_PROP_GAIN, float(self.gain), tol=0.01)
        return refused

    def read(self, timeout: float = 1.0) -> Frame | None:
        # VideoCapture.read blocks for one frame; a camera that is gone returns False.
        if self._cap is None:
            raise SourceError(f"camera {self.device!r} is not open")
        ok, image = self._cap.read()
        t = time.monotonic()
        if not ok or image is None:
            raise SourceError(f"camera {self.device!r} stopped delivering frames (unplugged?)")
        return Frame(to_output(image, self.output), self._next_seq(), t, self.name)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


@dataclass(frozen=True)
class CameraProbe:
    """One OpenCV camera that opened and delivered a frame."""

    device: str
    backend: str
    width: int
    height: int
    fps: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence native libraries (V4L2, GenTL) that print to fd 2 while probing devices."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real fd 2 (embedded interpreter): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def probe_opencv_cameras(max_index: int = 9) -> list[CameraProbe]:
    """Cameras at indices 0..max_index and /dev/video* that open and give a frame."""
    candidates: list[str | int] = list(range(max_index + 1))
    for path in sorted(glob.glob("/dev/video*")):
        suffix = path.removeprefix("/dev/video")
        if not (suffix.isdigit() and int(suffix) <= max_index):
            candidates.append(path)
    found: list[CameraProbe] = []
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        with quiet_stderr():
            for device in candidates:
                cap = cv2.VideoCapture(device)
                try:
                    if not cap.isOpened():
                        continue
                    ok, image = cap.read()
                    if not ok or image is None:
                        continue
                    found.append(
                        CameraProbe(
                            device=str(device),
                            backend=cap.getBackendName(),
                            width=int(image.shape[1]),
                            height=int(image.shape[0]),
                            fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
                        )
                    )
                finally:
                    cap.release()
    finally:
        cv2.utils.logging.setLogLevel(previous)
    return found
