"""Triggers: decide which frame shows which part, and give every part its id.

Four ways a part announces itself, all ending in the same ``TriggerEvent``:

* ``FreeRunTrigger`` watches every frame for parts and fires once when a part's centre
  crosses a line across the travel direction (no sensor needed);
* ``SerialTrigger`` hears a sensor through the serial link and takes the frame closest in
  time to the pulse;
* ``SoftwareTrigger`` is the operator's button: the latest frame;
* ``HardwareTrigger`` is a GenICam camera in trigger mode: each delivered frame is a part.

Frame-driven triggers are fed with ``on_frame(frame)`` (every frame, in order, e.g. from an
``Acquisition`` frame listener); all triggers also deliver their events to listeners.

Debounce (``trigger.debounce_ms``): a serial, software or hardware trigger closer than that
to the last *accepted* one is the same part (a bouncing contact, a chattering sensor, a
double press): it is counted in ``debounced`` and fires nothing. The window runs from the
last accepted trigger, not from the last bounce, so a sensor stuck chattering still yields
one part per window: parts are never let through uninspected, and the engine sheds what it
cannot inspect (fail-safe, recorded). The free-run trigger needs no time debounce: it
tracks each part and fires once per track, and two parts side by side may cross the line in
the same frame.

A trigger that cannot work as configured (a free-run ROI outside the frame) says so to its
alarm listeners instead of failing silently frame after frame.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from station.sources.base import Frame
from station.sources.base import config_value as _get

log = logging.getLogger(__name__)

TRIGGER_MODES = ("free_run", "serial", "software", "hardware")

# travel direction -> (axis, sign): axis 0 = x, 1 = y; sign +1 = towards larger coordinates
_DIRECTIONS: dict[str, tuple[int, int]] = {
    "left_to_right": (0, 1),
    "right_to_left": (0, -1),
    "top_to_bottom": (1, 1),
    "bottom_to_top": (1, -1),
}
_DIRECTION_ALIASES = {
    "+x": "left_to_right", "x": "left_to_right", "right": "left_to_right", "ltr": "left_to_right",
    "-x": "right_to_left", "left": "right_to_left", "rtl": "right_to_left",
    "+y": "top_to_bottom", "y": "top_to_bottom", "down": "top_to_bottom", "ttb": "top_to_bottom",
    "-y": "bottom_to_top", "up": "bottom_to_top", "btt": "bottom_to_top",
}


def parse_direction(direction: str) -> tuple[int, int]:
    """``"left_to_right"`` (or ``+x``/``right``) -> (axis, sign); unknown names are refused."""
    key = str(direction).strip().lower().replace("-", "_") if direction else "left_to_right"
    key = _DIRECTION_ALIASES.get(str(direction).strip().lower(), key)
    if key not in _DIRECTIONS:
        raise ValueError(
            f"trigger.direction {direction!r} is unknown; expected one of {', '.join(_DIRECTIONS)}"
        )
    return _DIRECTIONS[key]


@dataclass(frozen=True)
class TriggerEvent:
    """One part: its id, when it was seen (monotonic s), the frame showing it, and by whom."""

    part_id: int
    t: float
    frame: Frame | None
    source: str
    box: tuple[int, int, int, int] | None = None  # where the part is in the frame (x, y, w, h)


class PartCounter:
    """The one source of part ids, shared by all triggers of a station (thread-safe)."""

    def __init__(self, start: int = 1) -> None:
        self._count = itertools.count(start)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._count)


class FrameProvider(Protocol):
    """What the event-driven triggers need from acquisition (``Acquisition`` has both)."""

    def latest(self) -> Frame | None: ...

    def closest(self, t: float, wait_s: float = 0.0) -> Frame | None: ...


TriggerListener = Callable[[TriggerEvent], None]
#: ``cb(message)``: why the trigger cannot work as configured; ``""`` = it works again.
TriggerAlarmListener = Callable[[str], None]


def check_debounce_ms(value: Any) -> float:
    """``trigger.debounce_ms`` as a number of milliseconds >= 0 (else a one-line error)."""
    try:
        ms = float(value)
    except (TypeError, ValueError):
        ms = float("nan")
    if not math.isfinite(ms) or ms < 0:
        raise ValueError(f"trigger.debounce_ms = {value!r}: expected a time >= 0 ms")
    return ms


class Trigger:
    """Common plumbing: the part counter, debounce, and the event and alarm listeners."""

    name = "trigger"

    def __init__(self, counter: PartCounter | None = None, debounce_ms: float = 0.0) -> None:
        self.counter = counter or PartCounter()
        self._listeners: list[TriggerListener] = []
        self._alarm_listeners: list[TriggerAlarmListener] = []
        self.fired = 0
        self.debounced = 0  # triggers ignored as bounces of the one before
        self.debounce_s = check_debounce_ms(debounce_ms) / 1000.0
        self._last_t: float | None = None
        self._last_event: TriggerEvent | None = None
        self._gate = threading.Lock()
        self._problem = ""

    def add_listener(self, callback: TriggerListener) -> None:
        self._listeners.append(callback)

    def add_alarm_listener(self, callback: TriggerAlarmListener) -> None:
        """``callback(message)`` when the trigger cannot work as configured ("" = fixed).

        A problem that already holds is told to the new listener at once.
        """
        self._alarm_listeners.append(callback)
        if self._problem:
            callback(self._problem)

    @property
    def problem(self) -> str:
        """Why the trigger cannot work as configured now ("" = it works)."""
        return self._problem

    def _report(self, message: str) -> None:
        """Tell the alarm listeners when the problem changes (once, not every frame)."""
        if message == self._problem:
            return
        self._problem = message
        if message:
            log.warning("%s trigger: %s", self.name, message)
        for callback in list(self._alarm_listeners):
            try:
                callback(message)
            except Exception:
                log.exception("trigger alarm listener failed")

    def _accept(self, t: float) -> bool:
        """Debounce: False (and counted) for a trigger within ``debounce_s`` of the last
        accepted one; see the module docstring for why the window starts there."""
        with self._gate:
            if self.debounce_s > 0 and self._last_t is not None and \
                    t - self._last_t < self.debounce_s:
                self.debounced += 1
                return False
            self._last_t = t
            return True

    def on_frame(self, frame: Frame) -> list[TriggerEvent]:
        """Look at one frame; the events it causes (none for event-driven triggers)."""
        return []

    def close(self) -> None:
        """Stop any worker; further triggers are ignored."""

    def _emit(self, t: float, frame: Frame | None,
              box: tuple[int, int, int, int] | None = None) -> TriggerEvent:
        event = TriggerEvent(self.counter.next(), t, frame, self.name, box)
        self.fired += 1
        self._last_event = event
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:
                log.exception("trigger listener failed")
        return event


# -- free run: find parts, track them, fire on the line --------------------------------------


@dataclass(frozen=True)
class Blob:
    """A part candidate, in detection-image pixels (the ROI shrunk to ``detect_size``)."""

    s: float  # centre along the travel direction, 0 at the entry edge of the ROI
    c: float  # centre across the travel direction
    size: float  # longer side of its bounding box: how far it may move between frames
    cut: bool  # touches the ROI border, so it is not fully visible
    at_entry: bool  # touches the edge parts come in from
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # in frame pixels, for the inspection crop


@dataclass
class _Track:
    s: float
    c: float
    t: float  # timestamp of the last observation
    n: int  # frame number of the last observation
    size: float
    velocity: float | None = None  # detection px per frame along travel
    missed: int = 0
    done: bool = False  # fired, or first seen already past the line
    pending: bool = False  # centre is past the line but the part was not fully visible yet
    seen: int = 1
    cut: bool = False  # was cut by the border when last seen (its centroid is biased)


@dataclass(eq=False)
class FreeRunTrigger(Trigger):
    """Fire once per part when its centre crosses ``line_frac`` of the ROI along ``direction``.

    Detection shares ``station.vision.localize``'s idea (contrast to a background from which a grey
    closing removed the part; Otsu threshold unless ``threshold`` is set; pieces of one part
    merged) but finds every part in view, on a frame shrunk to ``detect_size``, in a few
    milliseconds. Tracks follow parts by the nearest predicted centre (per frame, along the
    travel direction); a crossing is "centre was before the line at the previous observation
    and is at or past it now", so a part that jumps over the line between two frames still
    fires, and it fires only while fully visible in the ROI (else at the first frame where it
    is). A part first seen already past the line (start-up) never fires. The centre is the
    blob's centroid, so the frame chosen may differ by one from a geometric centre's.
    """

    roi: tuple[int, int, int, int] = (0, 0, 0, 0)
    line_frac: float = 0.5
    direction: str = "left_to_right"
    polarity: str = "dark_on_light"
    detect_size: int = 256
    threshold: float = 0.0  # contrast (0..1 of full scale) that counts as part; 0 = Otsu
    min_contrast: float = 0.08  # floor on the automatic threshold, so an empty belt stays empty
    min_area_frac: float = 0.002
    merge_gap_frac: float = 0.03  # pieces this close (of the ROI's long side) are one part
    max_area_frac: float = 0.5
    border_margin_px: int = 2
    max_missed: int = 3
    counter: PartCounter | None = None
    name: str = "free_run"
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _speed: float | None = field(default=None, init=False, repr=False)
    _n: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        Trigger.__init__(self, self.counter)
        self._check_settings()
        self._axis, self._sign = parse_direction(self.direction)
        self._fit_shape: tuple[int, ...] | None = None
        self._fit: tuple[int, int, int, int] | None = None

    def _check_settings(self) -> None:
        """Refuse settings under which no part could ever fire, with the key named."""
        # 0 or 1 puts the line on the ROI's edge, where a part is never whole: it never fires
        if not (isinstance(self.line_frac, int | float) and 0.0 < self.line_frac < 1.0):
            raise ValueError(f"trigger.line_frac = {self.line_frac!r}: expected a fraction "
                             "strictly between 0 and 1 (0 and 1 are the ROI's edges)")
        if self.polarity not in ("dark_on_light", "light_on_dark"):
            raise ValueError(
                f"free-run polarity {self.polarity!r}: expected dark_on_light or light_on_dark"
            )
        for key in ("min_area_frac", "max_area_frac"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"localize.{key} = {value!r}: expected a fraction 0..1")
        if self.min_area_frac > self.max_area_frac:
            raise ValueError(
                f"localize.min_area_frac = {self.min_area_frac} > localize.max_area_frac = "
                f"{self.max_area_frac}: no part could ever be found")
        if len(self.roi) != 4 or any(int(v) != v or v < 0 for v in self.roi):
            raise ValueError(f"localize.roi = {self.roi!r}: expected x, y, w, h as whole "
                             "pixels >= 0 (w = h = 0: the whole frame)")
        if int(self.detect_size) < 8:
            raise ValueError(f"localize.detect_size = {self.detect_size!r}: expected >= 8 px")

    def _roi_in(self, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
        """The ROI within a frame of this shape (clipped to it), None when none of it is.

        Says why to the alarm listeners: an ROI outside the frame would otherwise mean a
        line with no inspection and no alarm.
        """
        if shape == self._fit_shape:
            return self._fit
        fh, fw = (int(shape[0]), int(shape[1])) if len(shape) >= 2 else (0, 0)
        x, y, w, h = (int(v) for v in self.roi)
        where = f"trigger ROI {x},{y},{w},{h}"
        if not (w > 0 and h > 0):
            x, y, w, h = 0, 0, fw, fh
        x0, y0, x1, y1 = min(x, fw), min(y, fh), min(x + w, fw), min(y + h, fh)
        fit: tuple[int, int, int, int] | None = (x0, y0, x1 - x0, y1 - y0)
        problem = ""
        if x1 - x0 < 2 or y1 - y0 < 2:
            fit = None
            problem = (f"{where} lies outside the {fw}x{fh} frame: no part can be seen "
                       "(fix localize.roi)")
        elif fit != (x, y, w, h):
            problem = (f"{where} reaches outside the {fw}x{fh} frame: watching "
                       f"{x0},{y0},{x1 - x0},{y1 - y0} only (fix localize.roi)")
        self._fit_shape, self._fit = shape, fit
        self._report(problem)
        return fit

    # -- detection ----------------------------------------------------------------------
    def _roi_image(self, image: np.ndarray,
                   roi: tuple[int, int, int, int]) -> tuple[np.ndarray, float]:
        x, y, w, h = roi
        image = image[y : y + h, x : x + w]
        if image.ndim == 3:
            code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
            image = cv2.cvtColor(image, code)
        if image.dtype != np.uint8:
            image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        long_side = max(image.shape[:2])
        scale = min(1.0, self.detect_size / long_side)
        if scale < 1.0:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return image, scale

    def _contrast(self, gray: np.ndarray) -> np.ndarray:
        """Contrast to the belt: the part is removed from a small copy by a grey closing
        (opening for light parts) wider than the part, blurred, and subtracted."""
        h, w = gray.shape
        f = 64.0 / max(h, w)
        small = cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))),
                           interpolation=cv2.INTER_AREA)
        k = max(3, round(0.25 * 64) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        op = cv2.MORPH_CLOSE if self.polarity == "dark_on_light" else cv2.MORPH_OPEN
        padded = cv2.copyMakeBorder(small, k, k, k, k, cv2.BORDER_REFLECT)
        bg = cv2.GaussianBlur(cv2.morphologyEx(padded, op, kernel), (0, 0), k / 4.0)
        bg = cv2.resize(bg[k:-k, k:-k], (w, h), interpolation=cv2.INTER_LINEAR)
        if self.polarity == "dark_on_light":
            return cv2.subtract(bg, gray)
        return cv2.subtract(gray, bg)

    def detect(self, image: np.ndarray) -> list[Blob]:
        """The part blobs in one frame (detection-image coordinates).

        Strong pixels (above the threshold) seed a part; it extends over weak pixels (above
        half of it), since glints on metal are only faintly darker; pieces closer than
        ``merge_gap_frac`` of the ROI are one part (threads, a defect splitting it).
        """
        roi = self._roi_in(image.shape)
        if roi is None:
            return []
        gray, scale = self._roi_image(image, roi)
        h, w = gray.shape
        contrast = self._contrast(gray)
        if self.threshold > 0:
            level = self.threshold * 255.0
        else:
            otsu, _ = cv2.threshold(contrast, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
            level = max(otsu, self.min_contrast * 255.0)
        weak = (contrast > max(0.5 * level, self.min_contrast * 255.0)).astype(np.uint8)
        n_pieces, pieces, stats, centroids = cv2.connectedComponentsWithStats(weak, connectivity=8)
        if n_pieces <= 1:
            return []
        # dust specks are left out before merging, or a trail of them would chain parts
        area_total = float(h * w)
        keep = stats[:, cv2.CC_STAT_AREA] >= max(3.0, 0.25 * self.min_area_frac * area_total)
        keep[0] = False
        kept = keep[pieces]
        gap = max(1, round(self.merge_gap_frac * max(h, w)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1,) * 2)
        grown = cv2.dilate(kept.astype(np.uint8), kernel)
        _, groups = cv2.connectedComponents(grown, connectivity=8)
        group_of = np.zeros(n_pieces, np.int32)
        group_of[pieces[kept]] = groups[kept]
        strong = np.zeros(n_pieces, bool)
        strong[np.unique(pieces[contrast > level])] = True
        merged: dict[int, list[int]] = {}
        for j in np.nonzero(keep)[0]:
            merged.setdefault(int(group_of[j]), []).append(int(j))
        margin = max(1, round(self.border_margin_px * scale))
        length = w if self._axis == 0 else h
        blobs: list[Blob] = []
        for members in merged.values():
            area = float(stats[members, cv2.CC_STAT_AREA].sum())
            if not strong[members].any() or not (
                self.min_area_frac * area_total <= area <= self.max_area_frac * area_total
            ):
                continue
            st = stats[members]
            x0, y0 = int(st[:, 0].min()), int(st[:, 1].min())
            x1 = int((st[:, 0] + st[:, 2]).max()) - 1
            y1 = int((st[:, 1] + st[:, 3]).max()) - 1
            weights = st[:, cv2.CC_STAT_AREA].astype(np.float64)
            cx, cy = (centroids[members] * weights[:, None]).sum(axis=0) / area
            left, top = x0 < margin, y0 < margin
            right, bottom = x1 >= w - margin, y1 >= h - margin
            if self._axis == 0:
                along, across = cx, cy
                entry = left if self._sign > 0 else right
            else:
                along, across = cy, cx
                entry = top if self._sign > 0 else bottom
            s = along if self._sign > 0 else length - along
            size = float(max(x1 - x0, y1 - y0) + 1)
            rx, ry = roi[0], roi[1]
            box = (rx + int(x0 / scale), ry + int(y0 / scale),
                   int(math.ceil((x1 - x0 + 1) / scale)), int(math.ceil((y1 - y0 + 1) / scale)))
            blobs.append(Blob(float(s), float(across), size,
                              left or right or top or bottom, entry, box))
        return blobs

    # -- tracking -----------------------------------------------------------------------
    def on_frame(self, frame: Frame) -> list[TriggerEvent]:
        blobs = self.detect(frame.image)
        gray_len = self._roi_length(frame.image)
        line = self.line_frac * gray_len
        t = frame.timestamp
        self._n += 1
        n = self._n
        events: list[TriggerEvent] = []

        # predicted positions (per frame, not per second: frames replayed flat out have
        # timestamps of when they were read); match greedily, nearest first
        pairs: list[tuple[float, int, int]] = []
        for ti, track in enumerate(self._tracks):
            velocity = track.velocity if track.velocity is not None else (self._speed or 0.0)
            s_pred = track.s + velocity * (n - track.n)
            for bi, blob in enumerate(blobs):
                gate = max(0.6 * max(track.size, blob.size), 4.0)
                ds = blob.s - s_pred
                if ds < -gate or abs(blob.c - track.c) > gate:
                    continue
                dist = math.hypot(ds, blob.c - track.c)
                if dist <= gate:
                    pairs.append((dist, ti, bi))
        pairs.sort()
        used_tracks: set[int] = set()
        used_blobs: set[int] = set()
        for _, ti, bi in pairs:
            if ti in used_tracks or bi in used_blobs:
                continue
            used_tracks.add(ti)
            used_blobs.add(bi)
            track, blob = self._tracks[ti], blobs[bi]
            event = self._advance(track, blob, t, n, line, frame)
            if event is not None:
                events.append(event)

        survivors: list[_Track] = []
        for ti, track in enumerate(self._tracks):
            if ti not in used_tracks:
                track.missed += 1
                if track.missed > self.max_missed:
                    continue
            survivors.append(track)
        for bi, blob in enumerate(blobs):
            if bi in used_blobs:
                continue
            track = _Track(s=blob.s, c=blob.c, t=t, n=n, size=blob.size, cut=blob.cut)
            # seen first already past the line: it crossed before we looked, so never fire
            track.done = blob.s >= line and not blob.at_entry
            track.pending = blob.s >= line and blob.at_entry
            if track.pending and not blob.cut:
                events.append(self._fire(track, t, frame, blob.box))
            survivors.append(track)
        self._tracks = survivors
        return events

    def _roi_length(self, image: np.ndarray) -> float:
        roi = self._roi_in(image.shape)
        _, _, w, h = roi if roi is not None else (0, 0, 1, 1)
        scale = min(1.0, self.detect_size / max(w, h))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return float(size[0] if self._axis == 0 else size[1])

    def _advance(
        self, track: _Track, blob: Blob, t: float, n: int, line: float, frame: Frame
    ) -> TriggerEvent | None:
        dn, dt = n - track.n, t - track.t
        if dn > 0 and not blob.cut and not track.cut:
            v = (blob.s - track.s) / dn
            track.velocity = v if track.velocity is None else 0.5 * track.velocity + 0.5 * v
            self._speed = v if self._speed is None else 0.9 * self._speed + 0.1 * v
        crossed = not track.done and track.s < line <= blob.s
        t_cross = t
        if crossed and blob.s > track.s and dt > 0:
            t_cross = track.t + (line - track.s) / (blob.s - track.s) * dt
        track.s, track.c, track.t, track.n = blob.s, blob.c, t, n
        track.size = max(track.size, blob.size)
        track.cut = blob.cut
        track.missed = 0
        track.seen += 1
        if crossed:
            track.pending = True
        if track.pending and not track.done and not blob.cut:
            return self._fire(track, t_cross if crossed else t, frame, blob.box)
        return None

    def _fire(self, track: _Track, t: float, frame: Frame,
              box: tuple[int, int, int, int] | None = None) -> TriggerEvent:
        track.done, track.pending = True, False
        return self._emit(t, frame, box)

    def reset(self) -> None:
        """Forget the tracked parts (after a pause or a recipe switch)."""
        self._tracks = []
        self._speed = None


# -- the other triggers ------------------------------------------------------------------


class HardwareTrigger(Trigger):
    """A GenICam camera in trigger mode: the sensor fired the camera, so each frame is a part.

    A bouncing sensor fires the camera twice: a frame within ``debounce_ms`` of the last
    accepted one is dropped as a bounce (counted in ``debounced``).
    """

    name = "hardware"

    def __init__(self, counter: PartCounter | None = None, debounce_ms: float = 0.0) -> None:
        super().__init__(counter, debounce_ms)

    def on_frame(self, frame: Frame) -> list[TriggerEvent]:
        if not self._accept(frame.timestamp):
            return []
        return [self._emit(frame.timestamp, frame)]


class SoftwareTrigger(Trigger):
    """The operator's button: inspect the latest frame now.

    A press within ``debounce_ms`` of the last accepted one (a bouncing key, a double
    click) is the same part: ``fire`` returns that part's event and nothing new fires.
    """

    name = "software"

    def __init__(self, frames: FrameProvider | None = None, counter: PartCounter | None = None,
                 debounce_ms: float = 0.0) -> None:
        super().__init__(counter, debounce_ms)
        self.frames = frames

    def fire(self) -> TriggerEvent:
        t = time.monotonic()
        if not self._accept(t) and self._last_event is not None:
            return self._last_event
        frame = self.frames.latest() if self.frames is not None else None
        return self._emit(t, frame)


class SerialTrigger(Trigger):
    """A sensor's pulse over the serial link: the frame closest in time to the pulse.

    The link's listener only debounces and queues the time, so the serial thread never
    waits; a worker waits up to ``wait_s`` for a frame at or after the pulse and then picks
    the nearest.
    """

    name = "serial"

    def __init__(
        self,
        link: Any,
        frames: FrameProvider,
        counter: PartCounter | None = None,
        wait_s: float = 0.1,
        debounce_ms: float = 0.0,
    ) -> None:
        super().__init__(counter, debounce_ms)
        self.frames = frames
        self.wait_s = wait_s
        self._pending: queue.Queue[float | None] = queue.Queue()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="serial-trigger", daemon=True)
        self._worker.start()
        link.add_trigger_listener(self.on_trigger)

    def on_trigger(self, t: float) -> None:
        """The serial link saw a trigger at monotonic time ``t``."""
        if not self._closed and self._accept(t):
            self._pending.put(t)

    def _run(self) -> None:
        while True:
            t = self._pending.get()
            if t is None:
                return
            try:
                self._emit(t, self.frames.closest(t, self.wait_s))
            except Exception:
                log.exception("serial trigger at %.3f failed", t)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending.put(None)
            self._worker.join(2.0)


def make_trigger(
    trigger: Any,
    *,
    frames: FrameProvider | None = None,
    serial_link: Any = None,
    localize: Any = None,
    counter: PartCounter | None = None,
) -> Trigger:
    """The trigger the recipe's ``[trigger]`` section describes (``mode`` and its settings).

    The free-run trigger looks where localization looks: ROI, polarity, contrast threshold,
    part area limits and border margin come from the recipe's ``[localize]`` section. The
    others are debounced by ``trigger.debounce_ms`` (20 ms when the section has none).
    """
    mode = str(_get(trigger, "mode", "free_run")).strip().lower()
    counter = counter or PartCounter()
    debounce_ms = check_debounce_ms(_get(trigger, "debounce_ms", 20.0))
    if mode == "free_run":
        polarity = str(_get(localize, "polarity", "dark_on_light"))
        return FreeRunTrigger(
            roi=tuple(int(v) for v in _get(localize, "roi", (0, 0, 0, 0))),
            line_frac=float(_get(trigger, "line_frac", 0.5)),
            direction=str(_get(trigger, "direction", "left_to_right")),
            # "auto" decides per frame in localize; a belt's contrast does not flip
            polarity=polarity if polarity == "light_on_dark" else "dark_on_light",
            threshold=float(_get(localize, "threshold", 0.0)),
            min_area_frac=float(_get(localize, "min_area_frac", 0.002)),
            max_area_frac=float(_get(localize, "max_area_frac", 0.5)),
            border_margin_px=int(_get(localize, "border_margin_px", 2)),
            min_contrast=float(_get(localize, "min_contrast", 0.08)),
            merge_gap_frac=float(_get(localize, "merge_gap_frac", 0.03)),
            # it must keep up with every frame, so it never looks finer than 256 px
            detect_size=min(int(_get(localize, "detect_size", 256)), 256),
            counter=counter,
        )
    if mode == "software":
        return SoftwareTrigger(frames, counter, debounce_ms)
    if mode == "hardware":
        return HardwareTrigger(counter, debounce_ms)
    if mode == "serial":
        if serial_link is None or frames is None:
            raise ValueError("trigger.mode = 'serial' needs the serial link ([reject] port) open")
        return SerialTrigger(serial_link, frames, counter, debounce_ms=debounce_ms)
    raise ValueError(f"trigger.mode {mode!r} is unknown; expected one of {', '.join(TRIGGER_MODES)}")
