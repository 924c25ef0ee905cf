"""The JSON of the MQTT messages (docs/mqtt.md): result, status, alarm, and the last will.

The field names are a contract with every subscriber (``station fleet``, an MES): change
them only with ``"v"``. Builders take the engine's own objects (:class:`PartResult`,
:class:`Alarm`, the engine) and return plain dicts; :func:`encode` makes the bytes.
Non-finite numbers become ``null`` (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from station.pipeline.alarms import Alarm
from station.pipeline.inspector import PartResult
from station.pipeline.rows import MANUAL_TRIGGER, reasons

VERSION = 1
KINDS = ("result", "status", "alarm")


@dataclass(frozen=True)
class Identity:
    """Who publishes: the topic levels and the names every message carries."""

    topic_root: str
    plant: str
    line: str
    station: str

    def topic(self, kind: str) -> str:
        """``<root>/<plant>/<line>/<station>/<kind>`` (kind: result, status or alarm)."""
        if kind not in KINDS:
            raise ValueError(f"message kind {kind!r}: expected one of {', '.join(KINDS)}")
        return f"{self.topic_root}/{self.plant}/{self.line}/{self.station}/{kind}"

    def header(self) -> dict[str, Any]:
        return {"v": VERSION, "station": self.station, "plant": self.plant, "line": self.line}


def iso_time(epoch: float | None) -> str | None:
    """UTC ISO 8601 with milliseconds and a Z: ``2026-12-02T01:02:03.123Z``."""
    if epoch is None:
        return None
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _num(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def result_payload(ident: Identity, r: PartResult, *, recipe: str, product: str,
                   model_versions: dict[str, str], decision: Any,
                   verdict_time: float | None = None) -> dict[str, Any]:
    """One inspected part. ``seq`` is set by the publisher when the message is queued
    (per-station, increasing, for order, duplicate and loss checks). ``reject_fired`` is
    ``false`` for a manual trigger (never fires the output) and ``null`` otherwise: the
    reject point lies after the verdict. ``images`` are ``null``: the records write them
    later (sampled), under names known only then."""
    scores: dict[str, Any] = {}
    if "autoencoder" in model_versions:
        scores["autoencoder"] = {"raw": _num(r.ae_raw), "normalized": _num(r.ae_score)}
    if "classifier" in model_versions:
        scores["classifier"] = {"raw": _num(r.cls_raw), "normalized": _num(r.cls_score)}
    return {
        **ident.header(), "seq": None, "part_id": r.part_id,
        "time": iso_time(time.time() if verdict_time is None else verdict_time),
        "recipe": recipe, "product": product, "verdict": str(r.verdict),
        "reason": r.error or reasons(r, decision), "scores": scores,
        "model_versions": dict(model_versions), "latency_ms": _num(round(r.latency_ms, 3)),
        "reject_fired": False if r.trigger == MANUAL_TRIGGER else None,
        "images": {"frame": None, "crop": None},
    }


def alarm_payload(ident: Identity, alarm: Alarm, raised: bool,
                  at: float | None = None) -> dict[str, Any]:
    """An alarm raised (``raised: true``) or its condition gone (``raised: false``)."""
    return {"v": VERSION, "station": ident.station, "kind": alarm.kind,
            "message": alarm.message, "raised": raised,
            "time": iso_time(time.time() if at is None else at)}


def status_payload(ident: Identity, *, state: str, recipe: str, product: str,
                   counts: dict[str, int], shift_start: float | None,
                   alarms: list[Alarm], at: float | None = None) -> dict[str, Any]:
    """The retained status: online, state, recipe, this shift's counts and yield, alarms."""
    parts = int(counts.get("parts", 0))
    return {
        **ident.header(), "online": True, "state": state, "recipe": recipe,
        "product": product, "time": iso_time(time.time() if at is None else at),
        "shift_start": iso_time(shift_start),
        "counts": {k: int(counts.get(k, 0)) for k in ("parts", "passed", "rejected", "errors")},
        "yield": round(counts.get("passed", 0) / parts, 4) if parts else None,
        "alarms": [{"kind": a.kind, "message": a.message, "since": iso_time(a.time),
                    "active": a.active} for a in alarms],
    }


def offline_payload(ident: Identity) -> dict[str, Any]:
    """The last will (the broker publishes it when the station dies) and the clean goodbye."""
    return {**ident.header(), "online": False, "time": None}


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (``allow_nan=False``: a NaN here is a bug, never sent)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()
