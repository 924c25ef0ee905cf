"""A part's record row and images, and the feeder that hands rows to the records writer.

Every part, inspected or shed, gets its row: rows wait in the feeder's own backlog rather
than be dropped when the records writer is behind (see :class:`RowFeeder`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from station.config import DecisionSection
from station.pipeline.inspector import PartResult
from station.pipeline.overlay import MAP_IMAGE_KINDS, captioned, heatmap_overlay, map_label
from station.records import PartRecord, Records

log = logging.getLogger(__name__)

# The trigger source of the operator's Trigger button / Space when the line has another
# trigger (free_run, serial, hardware): an inspection of whatever is in view. It never fires
# the reject output: a part held up to the camera must not push the next part off the belt.
# (With ``trigger.mode = "software"`` the button is the line's own trigger: "software".)
MANUAL_TRIGGER = "manual"
MANUAL_NOT_FIRED = ("manual trigger: inspection only, the reject output is never fired "
                    "for a manual trigger")


def part_row(r: PartResult, product: str, model_versions: dict[str, str],
             decision: DecisionSection) -> PartRecord:
    """The records' row for one finished part (with its trigger source; a manual one also
    says that the reject output was not fired, and why)."""
    manual = r.trigger == MANUAL_TRIGGER
    return PartRecord(
        part_id=r.part_id, verdict=r.verdict, recipe=product, model_versions=model_versions,
        ae_score_raw=r.ae_raw, ae_score=r.ae_score, cls_score_raw=r.cls_raw,
        cls_score=r.cls_score, reasons=reasons(r, decision), error=r.error,
        latency_ms=r.latency_ms, trigger_source=r.trigger,
        reject_sent=0 if manual else None, reject_action="not_fired" if manual else None,
        reject_reason=MANUAL_NOT_FIRED if manual else None)


#: the largest score written as a number (100 times the threshold)
SHOWN_MAX = 100.0


def score_text(score: float | None) -> str:
    """A normalized score as every screen and record shows it: two decimals, rounded DOWN.

    Rounded down so that 0.998 never reads "1.00" (= at the limit) on a PASS, and so that
    the tile, the last-part panel, the rejects browser and the records all say the same
    number for one part (one rounded 1.49 while another truncated 1.48). From
    ``SHOWN_MAX`` up it says so and no more: a sure classifier's odds ratio runs to
    millions, which says nothing more to an operator and would not fit the panel (the
    records keep the number itself).

    >>> score_text(0.998), score_text(12.345), score_text(2.5e6)
    ('0.99', '12.34', '≥100')
    """
    if score is None:
        return "—"
    if not math.isfinite(score):
        return "n/a"
    if score >= SHOWN_MAX:
        return f"≥{SHOWN_MAX:g}"
    return _down(score)


def limit_text(limit: float) -> str:
    """A threshold in force, written as scores are but never capped: an engineer who loosened
    the classifier to 1,176 reads "1176.00", not "≥100".

    >>> limit_text(1.0), limit_text(1176.0)
    ('1.00', '1176.00')
    """
    return _down(limit) if math.isfinite(limit) else "n/a"


def _down(value: float) -> str:
    return f"{math.floor(round(value * 100.0, 6)) / 100.0:.2f}"


def reasons(r: PartResult, d: DecisionSection) -> str:
    """Which scores reached their thresholds, in words (the row's ``reasons``); under the
    ``sum`` rule the evidence added, which may reject a part neither score alone would."""
    out = []
    if d.rule == "sum" and r.evidence is not None:
        sign = ">=" if r.evidence >= d.sum_threshold else "<"
        out.append(f"evidence {r.evidence:+.2f} {sign} {d.sum_threshold:+.2f} (sum)")
    if r.ae_score is not None and r.ae_score >= d.ae_threshold:
        out.append(f"autoencoder {score_text(r.ae_score)} >= {limit_text(d.ae_threshold)}")
    if r.cls_score is not None and r.cls_score >= d.cls_threshold:
        out.append(f"classifier {score_text(r.cls_score)} >= {limit_text(d.cls_threshold)}")
    return "; ".join(out)


def part_images(r: PartResult) -> dict[str, np.ndarray]:
    """The crop and its map overlay, and an ERROR's frame, for the records' image store.

    The map is the deciding model's (``r.map_source``): its image kind says whose it is
    (``heatmap`` for the autoencoder's, ``heatmap_classifier`` for the classifier's), and a
    caption under it says so in words."""
    images: dict[str, np.ndarray] = {}
    if r.crop is not None:
        images["crop"] = r.crop
        if r.heatmap is not None:
            source = r.map_source or "autoencoder"
            images[MAP_IMAGE_KINDS.get(source, "heatmap")] = captioned(
                heatmap_overlay(r.crop, r.heatmap), map_label(source, short=True))
    if r.frame is not None:
        images["frame"] = r.frame
    return images


class RowFeeder:
    """Hands part rows to the records writer, in order, without ever dropping one silently.

    ``Records.submit`` refuses a part when its queue is full (a slow disk, a burst of
    parts), and the inspection thread must not wait for the disk. So rows wait here, and
    this thread hands them on no faster than the writer takes them: it waits for the writer
    (a flush) after every ``batch`` rows, well inside the writer's queue. While more than
    ``image_backlog`` rows wait, the images of the waiting ones are left out (the row comes
    first; images are optional). Only past ``max_rows`` waiting rows (a writer that stopped)
    is a row lost, and then it is counted and alarmed.
    """

    def __init__(self, records: Records, alarm: Callable[[str], object], *, batch: int = 64,
                 image_backlog: int = 256, max_rows: int = 50_000) -> None:
        self.records = records
        self._alarm = alarm
        self._batch = batch
        self._image_backlog = image_backlog
        self._max_rows = max_rows
        self._items: deque[tuple[PartRecord, dict[str, np.ndarray]]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stop = False
        self._since_flush = 0
        self.lost = 0
        self.images_left_out = 0
        self._thread = threading.Thread(target=self._run, name="records-feeder", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._items) + int(self._busy)

    def put(self, row: PartRecord, images: dict[str, np.ndarray]) -> None:
        """Queue a row (never blocks)."""
        with self._cond:
            if len(self._items) < self._max_rows and not self._stop:
                self._items.append((row, images))
                self._cond.notify_all()
                return
            self.lost += 1
            lost = self.lost
        log.error("record of part %s lost: %d rows already wait for the records writer",
                  row.part_id, self._max_rows)
        self._alarm(f"records writer stalled: {lost} part row(s) could not be recorded "
                    f"(last: part {row.part_id})")

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stop:
                    self._cond.wait()
                if not self._items:
                    return
                row, images = self._items.popleft()
                self._busy = True
                backlog = len(self._items)
            if images and backlog >= self._image_backlog:
                images = {}
                self.images_left_out += 1
            try:
                self._hand_on(row, images)
            except Exception:  # the records are closed or broken: say so, keep going
                log.exception("record of part %s not written", row.part_id)
                self.lost += 1
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _hand_on(self, row: PartRecord, images: dict[str, np.ndarray]) -> None:
        if self._since_flush >= self._batch:
            self.records.flush(30.0)  # the writer's pace, not the triggers'
            self._since_flush = 0
        while not self.records.submit(row, images):
            self.records.flush(1.0)  # refused: the writer is behind; offer it again
            self._since_flush = 0
            images = {}
        self._since_flush += 1

    def drain(self, timeout: float) -> bool:
        """Wait until every row queued so far is handed on and written."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._items or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return self.records.flush(max(0.0, end - time.monotonic()))

    def close(self, timeout: float = 60.0) -> None:
        """Hand every waiting row on, then stop."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            left = len(self._items)
        if left:
            self.lost += left
            log.error("%d part row(s) not recorded: the records writer did not take them", left)
