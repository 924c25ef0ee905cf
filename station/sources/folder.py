"""A folder of images as a camera: replay saved frames (or crops) through the whole station."""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from station.sources.base import (
    IMAGE_EXTENSIONS,
    EndOfStream,
    Frame,
    FrameSource,
    Pacer,
    SourceError,
    check_output,
    natural_key,
    to_output,
)


class FolderSource(FrameSource):
    """Images of a folder in natural sort order, ``fps`` per second (0 = flat out).

    The folder is listed again at each loop, so images added while running are picked up.
    A folder or file that vanishes is a ``SourceError``, so acquisition reports the loss.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float = 10.0,
        loop: bool = False,
        paced: bool = True,
        output: str = "",
    ) -> None:
        self.path = Path(path)
        super().__init__(f"folder:{self.path.name}")
        self.loop = loop
        self.output = check_output(output)
        self._info.fps = float(fps or 0.0)
        self._pacer = Pacer(self._info.fps if paced else 0.0)
        self._files: list[Path] = []
        self._index = 0
        self._opened = False

    def _list(self) -> list[Path]:
        if not self.path.is_dir():
            raise SourceError(f"image folder {self.path} does not exist")
        files = sorted(
            (p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
            key=natural_key,
        )
        if not files:
            raise SourceError(
                f"image folder {self.path} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        return files

    def open(self) -> None:
        self._files = self._list()
        self._index = 0
        first = cv2.imread(str(self._files[0]), cv2.IMREAD_UNCHANGED)
        if first is None:
            raise SourceError(f"image {self._files[0]} cannot be read")
        self._info.height, self._info.width = first.shape[:2]
        self._pacer.reset()
        self._opened = True

    def read(self, timeout: float = 1.0) -> Frame | None:
        if not self._opened:
            raise SourceError(f"image folder {self.path} is not open")
        if self._index >= len(self._files):
            if not self.loop:
                raise EndOfStream(f"end of image folder {self.path}")
            self._files = self._list()
            self._index = 0
        if not self._pacer.wait(timeout):
            return None
        path = self._files[self._index]
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            if not path.exists():
                raise SourceError(f"image {path} disappeared")
            raise SourceError(f"image {path} cannot be decoded")
        self._index += 1
        t = time.monotonic()
        return Frame(to_output(image, self.output), self._next_seq(), t, self.name)

    def close(self) -> None:
        self._opened = False
