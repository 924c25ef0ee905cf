"""A folder of images as a camera: replay saved frames (or crops) through the whole station."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from station.sources.base import (
    IMAGE_EXTENSIONS,
    BadImage,
    EndOfStream,
    Frame,
    FrameSource,
    Pacer,
    SourceError,
    check_output,
    natural_key,
    to_output,
)
from station.sources.datasets import DatasetError, load_image


class FolderSource(FrameSource):
    """Images of a folder in natural sort order, ``fps`` per second (0 = flat out).

    The folder is listed again at each loop, so images added while running are picked up.
    A folder that vanishes is a ``SourceError``, so acquisition reports the loss; reopening
    resumes after the last image read, never from the first (a non-looping folder must end).
    A file that cannot be decoded (empty, truncated, not an image, unsupported pixel type)
    is a ``BadImage``: acquisition skips it and records why, and the folder reads on. A
    looping folder reports a bad file once and leaves it out of later passes until it changes;
    one none of whose images can be read is a ``SourceError``.
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
        self._last: Path | None = None  # the last file read in this pass: reopen resumes after it
        self._bad: dict[Path, tuple[int, int]] = {}  # file -> (mtime_ns, size) when refused
        self._opened = False

    def _list(self) -> list[Path]:
        if not self.path.is_dir():
            raise SourceError(f"image folder {self.path} does not exist")
        try:
            entries = list(self.path.iterdir())
        except OSError as exc:
            raise SourceError(f"image folder {self.path} cannot be listed: "
                              f"{exc.strerror or exc}") from None
        files = sorted((p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS),
                       key=natural_key)
        if not files:
            raise SourceError(
                f"image folder {self.path} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        usable = [p for p in files if self._bad.get(p) != _stamp(p)]
        if not usable:
            raise SourceError(f"image folder {self.path}: none of its {len(files)} images "
                              "can be read")
        return usable

    def open(self) -> None:
        """List the folder; after a loss, go on after the last image read (no rewind)."""
        files = self._list()
        index = 0
        if self._last is not None:
            last = natural_key(self._last)
            index = next((i for i, p in enumerate(files) if natural_key(p) > last), len(files))
        self._files, self._index = files, index
        if not self._info.width and index < len(files):
            # the size for the UI; a bad first file is skipped when it is read
            with contextlib.suppress(DatasetError):
                self._info.height, self._info.width = load_image(files[index]).shape[:2]
        self._pacer.reset()
        self._opened = True

    def _next_pass(self) -> None:
        """End of the folder: stop, or list it again for the next loop."""
        if not self.loop:
            raise EndOfStream(f"end of image folder {self.path}")
        self._files, self._index, self._last = self._list(), 0, None

    def read(self, timeout: float = 1.0) -> Frame | None:
        if not self._opened:
            raise SourceError(f"image folder {self.path} is not open")
        if self._index >= len(self._files):
            self._next_pass()
        if not self._pacer.wait(timeout):
            return None
        path = self._files[self._index]
        try:
            image = load_image(path)
        except DatasetError as exc:
            if not self.path.is_dir():  # the folder, not the file: reopening retries this file
                raise SourceError(f"image folder {self.path} disappeared") from None
            self._index, self._last = self._index + 1, path
            self._bad[path] = _stamp(path)
            raise BadImage(path, str(exc).removeprefix(f"{path}: ")) from None
        self._index, self._last = self._index + 1, path
        if not self._info.width:
            self._info.height, self._info.width = image.shape[:2]
        t = time.monotonic()
        return Frame(to_output(image, self.output), self._next_seq(), t, self.name)

    def close(self) -> None:
        self._opened = False


def _stamp(path: Path) -> tuple[int, int]:
    """What identifies a version of a file: a refused file that is rewritten is tried again."""
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)
