"""Recorded video as a camera: replay a line recording at its own frame rate or flat out."""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from station.sources.base import (
    EndOfStream,
    Frame,
    FrameSource,
    Pacer,
    SourceError,
    check_output,
    to_output,
)


class VideoFileSource(FrameSource):
    """Frames from an MJPG ``.avi`` / mp4v ``.mp4`` (anything OpenCV's FFmpeg can decode).

    ``paced`` replays at the file's fps (``fps`` overrides it); otherwise as fast as decoding
    goes. ``output`` ('mono8' / 'bgr8' / '') is the pixel format handed on. A file that
    vanishes mid-run is a ``SourceError`` so acquisition reports the loss; reopening it goes
    on from the frame after the last one read, never from the start.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        loop: bool = False,
        paced: bool = True,
        fps: float = 0.0,
        output: str = "",
    ) -> None:
        self.path = Path(path)
        super().__init__(f"video:{self.path.name}")
        self.loop = loop
        self.paced = paced
        self.output = check_output(output)
        self._fps_override = float(fps or 0.0)
        self._cap: cv2.VideoCapture | None = None
        self._pacer = Pacer(0.0)
        self._pos = 0  # frames read in this pass: where a reopen resumes

    def open(self) -> None:
        self.close()
        if not self.path.is_file():
            raise SourceError(f"video file {self.path} does not exist")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"video file {self.path} cannot be decoded by OpenCV")
        self._cap = cap
        file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        fps = self._fps_override or file_fps
        self._info.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self._info.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._info.fps = fps
        self._pacer = Pacer(fps if self.paced else 0.0)
        if self._pos:
            self._resume(cap)

    def _resume(self, cap: cv2.VideoCapture) -> None:
        """Seek to the frame after the last one read (decode and drop if seeking fails)."""
        if cap.set(cv2.CAP_PROP_POS_FRAMES, self._pos):
            return
        for _ in range(self._pos):
            if not cap.grab():
                break

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"video file {self.path} is not open")
        if not self.path.exists():
            raise SourceError(f"video file {self.path} disappeared")
        if not self._pacer.wait(timeout):
            return None
        ok, image = self._cap.read()
        if not ok:
            if not self.loop:
                raise EndOfStream(f"end of video file {self.path}")
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._pos = 0
            ok, image = self._cap.read()
            if not ok:  # a rewind that fails means the file itself is broken
                raise SourceError(f"video file {self.path} could not be rewound for looping")
        self._pos += 1
        t = time.monotonic()
        return Frame(to_output(image, self.output), self._next_seq(), t, self.name)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
