"""The trigger a recipe describes: ``make_trigger`` reads ``[trigger]`` (and ``[localize]``)."""

from __future__ import annotations

from typing import Any, cast

from station.config import TriggerSection
from station.sources.base import config_value as _get
from station.trigger.base import FrameProvider, PartCounter, Trigger, check_debounce_ms
from station.trigger.freerun import FreeRunTrigger
from station.trigger.hardware import HardwareTrigger
from station.trigger.plc import PlcTrigger
from station.trigger.serial import SerialTrigger
from station.trigger.software import SoftwareTrigger
from station.vision.localize import LocalizeParams

TRIGGER_MODES = ("free_run", "serial", "software", "hardware", "plc")
_TRIGGER = TriggerSection()  # the defaults of the recipe's one schema, for a key left out
_LOCALIZE = LocalizeParams()


def make_trigger(
    trigger: TriggerSection | Any,
    *,
    frames: FrameProvider | None = None,
    serial_link: Any = None,
    localize: LocalizeParams | Any = None,
    counter: PartCounter | None = None,
) -> Trigger:
    """The trigger the recipe's ``[trigger]`` section describes (``mode`` and its settings).

    ``trigger`` and ``localize`` are the recipe's sections (or mappings with some of their
    keys; a missing key takes the section's default). The free-run trigger looks where
    localization looks: ROI, polarity and how parts are segmented come from ``[localize]``.
    The others are debounced by ``trigger.debounce_ms``.
    """
    mode = str(_get(trigger, "mode", _TRIGGER.mode)).strip().lower()
    counter = counter or PartCounter()
    debounce_ms = check_debounce_ms(_get(trigger, "debounce_ms", _TRIGGER.debounce_ms))
    if mode == "free_run":
        return _free_run(trigger, localize, counter)
    if mode == "software":
        return SoftwareTrigger(frames, counter, debounce_ms)
    if mode == "hardware":
        return HardwareTrigger(counter, debounce_ms)
    if mode == "plc":
        return PlcTrigger(frames, counter, debounce_ms)
    if mode == "serial":
        if serial_link is None or frames is None:
            raise ValueError("trigger.mode = 'serial' needs the serial link ([reject] port) open")
        return SerialTrigger(serial_link, frames, counter, debounce_ms=debounce_ms)
    raise ValueError(f"trigger.mode {mode!r} is unknown; expected one of {', '.join(TRIGGER_MODES)}")


def _free_run(trigger: Any, localize: Any, counter: PartCounter) -> FreeRunTrigger:
    d = _LOCALIZE
    polarity = str(_get(localize, "polarity", d.polarity))
    roi = tuple(int(v) for v in _get(localize, "roi", d.roi))
    return FreeRunTrigger(
        roi=cast(tuple[int, int, int, int], roi),
        line_frac=float(_get(trigger, "line_frac", _TRIGGER.line_frac)),
        direction=str(_get(trigger, "direction", _TRIGGER.direction)),
        # "auto" decides per frame in localize; a belt's contrast does not flip
        polarity=polarity if polarity == "light_on_dark" else "dark_on_light",
        threshold=float(_get(localize, "threshold", d.threshold)),
        min_area_frac=float(_get(localize, "min_area_frac", d.min_area_frac)),
        max_area_frac=float(_get(localize, "max_area_frac", d.max_area_frac)),
        border_margin_px=int(_get(localize, "border_margin_px", d.border_margin_px)),
        min_contrast=float(_get(localize, "min_contrast", d.min_contrast)),
        merge_gap_frac=float(_get(localize, "merge_gap_frac", d.merge_gap_frac)),
        background_sigma_frac=float(_get(localize, "background_sigma_frac", d.background_sigma_frac)),
        # it must keep up with every frame, so it never looks finer than 256 px
        detect_size=min(int(_get(localize, "detect_size", d.detect_size)), 256),
        counter=counter,
    )
