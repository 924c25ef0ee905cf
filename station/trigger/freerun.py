"""The free-run trigger: find every part in view, track it, fire once when it crosses a line.

No sensor needed: the camera watches the belt, and the part's centre crossing a line across
the travel direction is the trigger. Parts are found with the station's one segmentation
(``station.vision.segment``), so what fires is what localization then finds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from station.sources.base import Frame
from station.trigger.base import PartCounter, Trigger, TriggerEvent
from station.vision.gray import to_gray
from station.vision.localize import LocalizeParams
from station.vision.segment import segment

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
    fired: bool = False  # it triggered an inspection


_LOCALIZE = LocalizeParams()  # the defaults of the one schema of these settings

#: parts that must fire as usual after the last one that crossed unseen before the alarm clears
_CLEAR_AFTER = 20


def _says(count: int) -> bool:
    """1, 2, 5, 10, 20, 50, ...: when a growing count of unseen parts is told again."""
    while count >= 10 and count % 10 == 0:
        count //= 10
    return count in (1, 2, 5)


@dataclass(eq=False)
class FreeRunTrigger(Trigger):
    """Fire once per part when its centre crosses ``line_frac`` of the ROI along ``direction``.

    Detection is localization's segmentation (``station.vision.segment``, with the same
    settings and defaults: ``LocalizeParams``), but finds every part in view, on a frame
    shrunk to ``detect_size``, in a few milliseconds. Tracks follow parts by the nearest predicted centre (per frame, along the
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
    detect_size: int = _LOCALIZE.detect_size
    # how parts are found: the recipe's [localize] settings, with localization's defaults
    threshold: float = _LOCALIZE.threshold  # relative contrast that counts as part; 0 = Otsu
    min_contrast: float = _LOCALIZE.min_contrast  # floor on the automatic threshold
    min_area_frac: float = _LOCALIZE.min_area_frac
    merge_gap_frac: float = _LOCALIZE.merge_gap_frac  # pieces this close (of the ROI's long side) are one part
    max_area_frac: float = _LOCALIZE.max_area_frac
    border_margin_px: int = _LOCALIZE.border_margin_px
    background_sigma_frac: float = _LOCALIZE.background_sigma_frac
    max_missed: int = 3
    counter: PartCounter | None = None  # type: ignore[assignment]  # None: a fresh one
    name: str = "free_run"
    _tracks: list[_Track] = field(default_factory=list, init=False, repr=False)
    _speed: float | None = field(default=None, init=False, repr=False)
    _n: int = field(default=0, init=False, repr=False)
    _armed: bool = field(default=False, init=False, repr=False)  # a part was seen coming in
    _gone: list[_Track] = field(default_factory=list, init=False, repr=False)  # fired, lost
    _since_unseen: int = field(default=0, init=False, repr=False)

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
        """The ROI in grey, shrunk to ``detect_size``, and the shrink factor."""
        x, y, w, h = roi
        gray = to_gray(image[y : y + h, x : x + w])
        scale = min(1.0, self.detect_size / max(gray.shape[:2]))
        if scale < 1.0:
            size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        return gray, scale

    def _groups(self, gray: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
        """Segment; the blob stats and, per part, the blobs it is made of.

        Dust specks are left out before merging (or a trail of them would chain parts); blobs
        closer than ``merge_gap_frac`` of the ROI are one part (threads, a defect splitting
        it); a part must reach the threshold somewhere and have a plausible area.
        """
        h, w = gray.shape
        seg = segment(gray, self.polarity, self.background_sigma_frac, self.threshold,
                      self.min_contrast)
        blobs = seg.blobs
        if blobs.n <= 1:
            return blobs.stats, []
        area_total = float(h * w)
        keep = blobs.stats[:, cv2.CC_STAT_AREA] >= max(3.0, 0.25 * self.min_area_frac * area_total)
        keep[0] = False
        kept = keep[blobs.labels]
        gap = max(1, round(self.merge_gap_frac * max(h, w)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap + 1,) * 2)
        _, groups = cv2.connectedComponents(cv2.dilate(kept.astype(np.uint8), kernel), connectivity=8)
        group_of = np.zeros(blobs.n, np.int32)
        group_of[blobs.labels[kept]] = groups[kept]
        merged: dict[int, list[int]] = {}
        for j in np.nonzero(keep)[0]:
            merged.setdefault(int(group_of[j]), []).append(int(j))
        lo, hi = self.min_area_frac * area_total, self.max_area_frac * area_total
        parts = [m for m in merged.values() if blobs.strong[m].any()
                 and lo <= float(blobs.stats[m, cv2.CC_STAT_AREA].sum()) <= hi]
        return np.column_stack([blobs.stats, blobs.centroids]), parts

    def detect(self, image: np.ndarray) -> list[Blob]:
        """The part blobs in one frame (detection-image coordinates)."""
        roi = self._roi_in(image.shape)
        if roi is None:
            return []
        gray, scale = self._roi_image(image, roi)
        table, parts = self._groups(gray)
        return [self._blob(table[members], gray.shape, roi, scale) for members in parts]

    def _blob(self, st: np.ndarray, shape: tuple[int, ...], roi: tuple[int, int, int, int],
              scale: float) -> Blob:
        """One part from its blobs' rows (x, y, w, h, area, cx, cy) in detection pixels."""
        h, w = shape[:2]
        margin = max(1, round(self.border_margin_px * scale))
        x0, y0 = int(st[:, 0].min()), int(st[:, 1].min())
        x1 = int((st[:, 0] + st[:, 2]).max()) - 1
        y1 = int((st[:, 1] + st[:, 3]).max()) - 1
        weights = st[:, 4].astype(np.float64)
        cx, cy = (st[:, 5:7] * weights[:, None]).sum(axis=0) / weights.sum()
        left, top = x0 < margin, y0 < margin
        right, bottom = x1 >= w - margin, y1 >= h - margin
        if self._axis == 0:
            along, across = cx, cy
            entry = left if self._sign > 0 else right
        else:
            along, across = cy, cx
            entry = top if self._sign > 0 else bottom
        s = along if self._sign > 0 else (w if self._axis == 0 else h) - along
        size = float(max(x1 - x0, y1 - y0) + 1)
        box = (roi[0] + int(x0 / scale), roi[1] + int(y0 / scale),
               int(math.ceil((x1 - x0 + 1) / scale)), int(math.ceil((y1 - y0 + 1) / scale)))
        return Blob(float(s), float(across), size, left or right or top or bottom, entry, box)

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

        survivors = self._survivors(used_tracks, n)
        for bi, blob in enumerate(blobs):
            if bi not in used_blobs:
                event = self._new_track(blob, t, n, line, frame, survivors)
                if event is not None:
                    events.append(event)
        self._tracks = survivors
        self._since_unseen += len(events)
        if (self.unseen and self._since_unseen >= _CLEAR_AFTER
                and self.problem.startswith(self._UNSEEN)):
            self._report("")
        return events

    def _survivors(self, used_tracks: set[int], n: int) -> list[_Track]:
        """The tracks kept after a frame: those seen, and those missed no more than
        ``max_missed`` times; a fired one dropped is remembered a little longer."""
        survivors: list[_Track] = []
        for ti, track in enumerate(self._tracks):
            if ti not in used_tracks:
                track.missed += 1
                if track.missed > self.max_missed:
                    if track.fired:
                        self._gone.append(track)
                    continue
            survivors.append(track)
        self._gone = [g for g in self._gone if n - g.n <= 2 * (self.max_missed + 1)]
        return survivors

    def _new_track(self, blob: Blob, t: float, n: int, line: float, frame: Frame,
                   survivors: list[_Track]) -> TriggerEvent | None:
        """A part no track follows: fired at once when it comes in past the line whole."""
        track = _Track(s=blob.s, c=blob.c, t=t, n=n, size=blob.size, cut=blob.cut)
        # seen first already past the line: it crossed before we looked, so never fire
        track.done = blob.s >= line and not blob.at_entry
        track.pending = blob.s >= line and blob.at_entry
        event = None
        if track.pending and not blob.cut:
            event = self._fire(track, t, frame, blob.box)
        elif track.done and self._armed and not self._explained(blob, n, survivors):
            self._crossed_unseen(frame)
        self._armed = self._armed or not track.done
        survivors.append(track)
        return event

    _UNSEEN = "parts crossed the trigger line unseen"

    def _explained(self, blob: Blob, n: int, alive: list[_Track]) -> bool:
        """Whether a part first seen past the line is one that already fired (found again
        after the tracker lost it), not a new part that crossed between two frames."""
        for track in [*alive, *self._gone]:
            if not track.fired:
                continue
            gate = max(0.6 * max(track.size, blob.size), 4.0)
            ahead = max(track.velocity or self._speed or 0.0, 0.0) * (n - track.n)
            if (abs(blob.c - track.c) <= gate
                    and track.s - gate <= blob.s <= track.s + ahead + gate):
                return True
        return False

    def _crossed_unseen(self, frame: Frame) -> None:
        """A part was first seen past the line once parts had been seen coming in: it crossed
        between two frames (too fast for the frame rate) or was lost on the way, and was
        not inspected. An alarm, so the line does not run on uninspected parts unsaid."""
        self.unseen += 1
        self._since_unseen = 0
        if _says(self.unseen):
            self._report(
                f"{self._UNSEEN}: {self.unseen} part(s) since the start were first seen past "
                f"it and not inspected (the last in frame {frame.seq}); they move too far "
                "between frames to be followed: slow the belt, raise the frame rate, or move "
                "trigger.line_frac further from the edge the parts come in at")

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
        track.done, track.pending, track.fired = True, False, True
        return self._emit(t, frame, box)

    def reset(self) -> None:
        """Forget the tracked parts (after a pause or a recipe switch)."""
        self._tracks = []
        self._gone = []
        self._speed = None
        self._armed = False
