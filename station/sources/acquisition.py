"""The acquisition thread: reads a source without pause, survives cameras that come and go.

The preview takes the newest frame from a latest-value slot (it never waits on inspection);
inspection takes frames from a bounded queue where the oldest frame is dropped, and counted,
when inspection falls behind. A recent-frames ring lets a serial trigger find the frame
closest in time to its pulse.

A stored image that cannot be decoded (a folder or data set source raises ``BadImage``) is
skipped, counted and reported as ``image_skipped``; the source reads on from the next file.
It is not a camera loss: reopening would only meet the same file again.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from station.sources.base import BadImage, EndOfStream, Frame, FrameSource

log = logging.getLogger(__name__)

AlarmListener = Callable[[str, str], None]
FrameListener = Callable[[Frame], None]

CAMERA_LOST = "camera_lost"
CAMERA_RESTORED = "camera_restored"
SOURCE_ENDED = "source_ended"
IMAGE_SKIPPED = "image_skipped"


@dataclass(frozen=True)
class SkippedImage:
    """A stored image the source could not use: which file, why, and what it was known to be."""

    path: Path
    reason: str
    timestamp: float  # time.monotonic() when it was skipped
    truth: object | None = None


SkipListener = Callable[[SkippedImage], None]


@dataclass(frozen=True)
class AcquisitionStats:
    """Counters for the UI and ``bench``; ``fps`` is measured over the last ~2 s."""

    fps: float
    frames: int
    dropped: int
    connected: bool
    reconnects: int
    last_error: str
    skipped: int = 0  # stored images that could not be decoded and were skipped


class Acquisition:
    """Run ``source`` in a thread; see the module docstring for where frames go.

    Faults (``open`` failing, read errors, a free-running source silent for ``stall_s``, e.g.
    a network camera whose cable was pulled; 0 = never) close the source and retry it with exponential back-off from
    ``backoff_s`` up to ``backoff_max_s``; listeners hear ``camera_lost`` once per outage
    and ``camera_restored`` when frames flow again. A finite source that ends is reported
    as ``source_ended`` and the thread stops. Nothing here raises into the caller.
    """

    def __init__(
        self,
        source: FrameSource,
        *,
        queue_size: int = 4,
        history: int = 32,
        read_timeout: float = 0.25,
        backoff_s: float = 0.1,
        backoff_max_s: float = 3.0,
        stall_s: float = 5.0,
    ) -> None:
        if queue_size < 0:
            raise ValueError(f"queue_size must be 0 (no inspection queue) or more, got {queue_size}")
        self.source = source
        self.read_timeout = read_timeout
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stall_s = stall_s
        self._queue: deque[Frame] = deque()
        self._queue_size = queue_size
        self._history: deque[Frame] = deque(maxlen=max(2, history))
        self._latest: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._alarm_listeners: list[AlarmListener] = []
        self._frame_listeners: list[FrameListener] = []
        self._skip_listeners: list[SkipListener] = []
        self._skipped: deque[SkippedImage] = deque(maxlen=1000)
        self._skip_count = 0
        self._frames = 0
        self._dropped = 0
        self._reconnects = 0
        self._connected = False
        self._lost = False
        self._last_error = ""
        self._rate_times: deque[float] = deque(maxlen=240)

    # -- listeners ----------------------------------------------------------------------
    def add_alarm_listener(self, callback: AlarmListener) -> None:
        """``callback(kind, message)`` from the acquisition thread: camera_lost / _restored."""
        self._alarm_listeners.append(callback)

    def add_frame_listener(self, callback: FrameListener) -> None:
        """``callback(frame)`` for every frame, in order, from the acquisition thread.

        For work that must see every frame (the free-run trigger); keep it fast.
        """
        self._frame_listeners.append(callback)

    def add_skip_listener(self, callback: SkipListener) -> None:
        """``callback(SkippedImage)`` for each stored image skipped, from the acquisition thread.

        Listeners also hear it as the alarm ``image_skipped`` with the file and the reason.
        """
        self._skip_listeners.append(callback)

    def skipped(self) -> list[SkippedImage]:
        """The images skipped so far (the last 1000), oldest first."""
        with self._cond:
            return list(self._skipped)

    def _alarm(self, kind: str, message: str) -> None:
        level = logging.WARNING if kind in (CAMERA_LOST, IMAGE_SKIPPED) else logging.INFO
        log.log(level, "%s: %s", kind, message)
        for callback in list(self._alarm_listeners):
            try:
                callback(kind, message)
            except Exception:
                log.exception("alarm listener failed on %s", kind)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._finished.clear()
        self._thread = threading.Thread(target=self._run, name="acquisition", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Acquisition:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def finished(self) -> bool:
        """True once a finite source ended (or the thread stopped)."""
        return self._finished.is_set()

    def wait_finished(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    # -- consumers ----------------------------------------------------------------------
    def latest(self) -> Frame | None:
        """The newest frame (for the preview and the software trigger)."""
        return self._latest

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest queued frame for inspection, waiting up to ``timeout``; None if none."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._finished.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._queue.popleft()

    def closest(self, t: float, wait_s: float = 0.0) -> Frame | None:
        """The recent frame whose timestamp is nearest ``t``.

        Waits up to ``wait_s`` for a frame at or after ``t`` so that a trigger arriving just
        before the exposure still gets the frame that shows the part.
        """
        deadline = time.monotonic() + wait_s
        with self._cond:
            while (
                (not self._history or self._history[-1].timestamp < t)
                and not self._finished.is_set()
                and not self._stop.is_set()
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            frames = list(self._history)
        if not frames:
            return None
        stamps = [f.timestamp for f in frames]
        i = bisect.bisect_left(stamps, t)
        nearby = frames[max(0, i - 1) : i + 1]
        return min(nearby, key=lambda f: abs(f.timestamp - t))

    def stats(self) -> AcquisitionStats:
        with self._cond:
            times = list(self._rate_times)
            frames, dropped = self._frames, self._dropped
        now = time.monotonic()
        recent = [t for t in times if now - t <= 2.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 else 0.0
        return AcquisitionStats(
            fps=fps,
            frames=frames,
            dropped=dropped,
            connected=self._connected,
            reconnects=self._reconnects,
            last_error=self._last_error,
            skipped=self._skip_count,
        )

    # -- the thread ---------------------------------------------------------------------
    def _publish(self, frame: Frame) -> None:
        for callback in list(self._frame_listeners):
            try:
                callback(frame)
            except Exception:
                log.exception("frame listener failed")
        with self._cond:
            self._latest = frame
            self._history.append(frame)
            if self._queue_size:  # 0: frames go to the listeners and the latest slot only
                if len(self._queue) >= self._queue_size:
                    self._queue.popleft()
                    self._dropped += 1
                self._queue.append(frame)
            self._frames += 1
            self._rate_times.append(frame.timestamp)
            self._cond.notify_all()

    def _skip(self, exc: BadImage) -> None:
        skip = SkippedImage(exc.path, exc.reason, time.monotonic(), exc.truth)
        with self._cond:
            self._skipped.append(skip)
            self._skip_count += 1
        for callback in list(self._skip_listeners):
            try:
                callback(skip)
            except Exception:
                log.exception("skip listener failed")
        self._alarm(IMAGE_SKIPPED, f"{skip.path}: {skip.reason}; skipped")

    def _fault(self, message: str) -> None:
        self._last_error = message
        self._connected = False
        try:
            self.source.close()
        except Exception:
            log.exception("closing the failed source")
        if not self._lost:
            self._lost = True
            self._alarm(CAMERA_LOST, f"{self.source.name}: {message}")

    def _stalled(self, silent: float) -> bool:
        # a triggered camera is silent between parts; a slow source gets three periods
        info = self.source.info
        if self.stall_s <= 0 or info.triggered:
            return False
        return silent > max(self.stall_s, 3.0 / info.fps if info.fps > 0 else 0.0)

    def _run(self) -> None:
        backoff = self.backoff_s
        opened = False
        last_frame = time.monotonic()
        try:
            while not self._stop.is_set():
                if not opened:
                    try:
                        self.source.open()
                    except Exception as exc:
                        self._fault(str(exc) or type(exc).__name__)
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, self.backoff_max_s)
                        continue
                    opened = True
                    last_frame = time.monotonic()
                try:
                    frame = self.source.read(self.read_timeout)
                except EndOfStream as exc:
                    self._alarm(SOURCE_ENDED, str(exc))
                    break
                except BadImage as exc:  # the source moved past the file: read on
                    self._skip(exc)
                    last_frame = time.monotonic()
                    continue
                except Exception as exc:
                    opened = False
                    self._fault(str(exc) or type(exc).__name__)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.backoff_max_s)
                    continue
                if frame is None:
                    silent = time.monotonic() - last_frame
                    if self._stalled(silent):
                        opened = False
                        self._fault(f"no frame for {silent:.1f} s")
                    continue
                last_frame = time.monotonic()
                if not self._connected:
                    self._connected = True
                    if self._lost:
                        self._lost = False
                        self._reconnects += 1
                        self._alarm(CAMERA_RESTORED, f"{self.source.name}: frames flow again")
                backoff = self.backoff_s
                self._publish(frame)
        finally:
            try:
                self.source.close()
            except Exception:
                log.exception("closing the source")
            self._connected = False
            self._finished.set()
            with self._cond:
                self._cond.notify_all()
