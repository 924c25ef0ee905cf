"""A data set as a camera: each sample is one frame (and one part), carrying its label.

``station replay`` runs a folder or an MVTec-layout set through the same engine as the line;
the sample rides along in ``Frame.truth`` so verdicts can be compared with labels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from station.sources.base import BadImage, EndOfStream, Frame, FrameSource, SourceError
from station.sources.datasets import DatasetError, Sample, load_image


class SampleSource(FrameSource):
    """The samples in order, as fast as the consumer takes them; ends after the last.

    A sample whose image cannot be decoded is a ``BadImage`` carrying the sample, so
    acquisition skips and reports it and replay lists it; the next sample follows. Opening
    again (after a fault) goes on where it was: a replay never starts over.
    """

    def __init__(self, samples: Sequence[Sample], name: str = "replay") -> None:
        super().__init__(f"dataset:{name}")
        if not samples:
            raise SourceError(f"data set {name} has no images to replay")
        self.samples = list(samples)
        self._index = 0

    def open(self) -> None:
        """Nothing to acquire; the position is kept across reopening."""

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._index >= len(self.samples):
            raise EndOfStream(f"end of {self.name}")
        sample = self.samples[self._index]
        self._index += 1
        try:
            image = load_image(sample.path)
        except DatasetError as exc:
            reason = str(exc).removeprefix(f"{sample.path}: ")
            raise BadImage(sample.path, reason, truth=sample) from None
        if not self._info.width:
            self._info.height, self._info.width = image.shape[:2]
        return Frame(image, self._next_seq(), time.monotonic(), self.name, truth=sample)

    def close(self) -> None:
        """Nothing to release: files are opened one at a time."""
