"""The one frame-source interface every camera, file and simulator implements.

Acquisition, triggers and the engine see only ``FrameSource`` and ``Frame``, so a recipe can
switch between a USB camera, an industrial camera, a video file and the simulated conveyor
without the rest of the station noticing.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np


class SourceError(RuntimeError):
    """The source cannot deliver frames (open failed, device gone, file vanished).

    Acquisition treats it as "camera lost" and retries; the message says what and where.
    """


class EndOfStream(Exception):
    """A finite, non-looping source (video file, image folder) has delivered its last frame."""


class BadImage(Exception):
    """One stored image (a file of a folder or data set) cannot be used.

    Not a camera fault: the source has already moved past the file, so acquisition reports
    it, counts it and reads on; reopening would only read the same file again. ``truth`` is
    what the source knew about the image (a replayed sample and its label), so the part can
    still be accounted for.
    """

    def __init__(self, path: Path | str, reason: str, truth: object | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        self.truth = truth
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Frame:
    """One captured image; ``timestamp`` is ``time.monotonic()`` at capture."""

    image: np.ndarray
    seq: int
    timestamp: float
    source: str
    truth: object | None = None


@dataclass
class SourceInfo:
    """What the source is and how it is set up, for the UI, the records and ``bench``."""

    name: str
    width: int = 0
    height: int = 0
    fps: float = 0.0  # nominal frames per second; 0 = unknown / as fast as possible
    triggered: bool = False  # frames arrive only on a trigger, so silence is not a fault
    unapplied: list[str] = field(default_factory=list)  # settings the driver refused, and why

    @property
    def resolution(self) -> tuple[int, int]:
        return (self.width, self.height)


class FrameSource(ABC):
    """Open, read frames one by one, close. ``read`` blocks at most ``timeout`` seconds."""

    def __init__(self, name: str) -> None:
        self._info = SourceInfo(name=name)
        self._seq = 0

    @property
    def info(self) -> SourceInfo:
        return self._info

    @property
    def name(self) -> str:
        return self._info.name

    @abstractmethod
    def open(self) -> None:
        """Acquire the device or file; raise ``SourceError`` saying why it cannot."""

    @abstractmethod
    def read(self, timeout: float = 1.0) -> Frame | None:
        """The next frame, or ``None`` if none came within ``timeout``.

        Raises ``SourceError`` when the source has failed and ``EndOfStream`` when a finite
        source is exhausted.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice or after a failed ``open``."""

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pacer:
    """Releases frames at a steady rate in real time, as a camera would.

    Frame ``n`` is due at ``start + n / fps``; if the reader fell behind by more than a frame
    the schedule restarts from now instead of bursting to catch up.
    """

    def __init__(self, fps: float) -> None:
        self.fps = float(fps)
        self._start: float | None = None
        self._n = 0

    def reset(self) -> None:
        self._start = None
        self._n = 0

    def wait(self, timeout: float) -> bool:
        """Sleep until the next frame is due; False if that is more than ``timeout`` away."""
        if self.fps <= 0:
            return True
        now = time.monotonic()
        if self._start is None:
            self._start = now
            self._n = 0
        due = self._start + self._n / self.fps
        if now - due > 1.0 / self.fps:  # fell behind: restart the schedule
            self._start, self._n, due = now, 0, now
        delay = due - now
        if delay > timeout:
            time.sleep(max(0.0, timeout))
            return False
        if delay > 0:
            time.sleep(delay)
        self._n += 1
        return True


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def natural_key(path: Path) -> list[object]:
    """Sort ``img2.png`` before ``img10.png``, as a person numbering files expects."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


OUTPUT_FORMATS = ("", "mono8", "bgr8")


def check_output(fmt: str) -> str:
    """Validate the recipe's ``camera.pixel_format`` (what the pipeline receives)."""
    key = (fmt or "").strip().lower()
    if key not in OUTPUT_FORMATS:
        raise SourceError(
            f"camera.pixel_format {fmt!r} is unknown; expected 'mono8' or 'bgr8' "
            "('' keeps what the source delivers)"
        )
    return key


def to_output(image: np.ndarray, fmt: str) -> np.ndarray:
    """Convert a captured image to 8-bit grey (``mono8``) or BGR (``bgr8``); '' = as is."""
    if not fmt:
        return image
    if image.dtype != np.uint8:
        shift = 8 if image.dtype == np.uint16 else 0
        image = (image >> shift).astype(np.uint8) if shift else image.astype(np.uint8)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if fmt == "mono8":
        if channels == 1:
            return image if image.ndim == 2 else image[:, :, 0]
        code = cv2.COLOR_BGRA2GRAY if channels == 4 else cv2.COLOR_BGR2GRAY
        return cv2.cvtColor(image, code)
    if channels == 3:
        return image
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return cv2.cvtColor(image if image.ndim == 2 else image[:, :, 0], cv2.COLOR_GRAY2BGR)


def config_value(config: Any, key: str, default: Any = None) -> Any:
    """A key of a recipe section dataclass or of a plain mapping alike (None -> default)."""
    if config is None:
        return default
    value = config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)
    return default if value is None else value
