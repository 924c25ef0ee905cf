"""The simulated conveyor as a camera, so the demo and the tests run the real station."""

from __future__ import annotations

import time
from typing import Any

from station.sources.base import (
    Frame,
    FrameSource,
    Pacer,
    SourceError,
    check_output,
    config_value,
    to_output,
)


class SimulatedSource(FrameSource):
    """Frames of ``station.sim.conveyor.SimulatedConveyor`` paced to its fps in real time.

    Each ``Frame.truth`` is the conveyor's ``ConveyorFrame`` (the parts in view, their ids,
    labels and positions), so tests and the demo can check every verdict and trigger.
    ``paced=False`` renders as fast as possible (tests, benchmarks). The conveyor is built
    here, not in ``open``, so a bad setting is an error at start-up rather than an endless
    "camera lost".
    """

    def __init__(self, *, paced: bool = True, output: str = "", **conveyor_kwargs: Any) -> None:
        from station.sim.conveyor import SimulatedConveyor

        super().__init__("simulated")
        self.paced = paced
        self.output = check_output(output)
        try:
            self.conveyor = SimulatedConveyor(**conveyor_kwargs)
        except (ValueError, FileNotFoundError) as exc:
            raise SourceError(f"camera.simulated: {exc}") from None
        self._info.width, self._info.height = self.conveyor.width, self.conveyor.height
        self._info.fps = float(self.conveyor.fps)
        self._pacer = Pacer(self._info.fps if paced else 0.0)
        self._index = 0
        self._open = False

    def open(self) -> None:
        self._pacer.reset()
        self._open = True

    def read(self, timeout: float = 1.0) -> Frame | None:
        if not self._open:
            raise SourceError("simulated conveyor is not open")
        if not self._pacer.wait(timeout):
            return None
        truth = self.conveyor.frame(self._index)
        self._index += 1
        t = time.monotonic()
        image = to_output(truth.image, self.output)
        return Frame(image, self._next_seq(), t, self.name, truth)

    def close(self) -> None:
        self._open = False


def conveyor_settings(camera: Any, trigger: Any = None) -> dict[str, Any]:
    """``SimulatedConveyor`` keyword arguments from a recipe's ``[camera.simulated]`` table and
    the trigger's travel direction (what the recipe leaves out keeps the conveyor's default)."""
    sim = config_value(camera, "simulated", None)
    kwargs: dict[str, Any] = {}
    for key in ("width", "height", "fps", "speed_px_s", "pitch_px", "defect_rate", "seed",
                "color"):
        value = config_value(sim, key, None)
        if value is not None:
            kwargs[key] = value
    defects = config_value(sim, "defects", None)
    if defects:
        kwargs["defects"] = tuple(defects)
    images = config_value(sim, "images", None)
    if images:
        kwargs["part_images"] = images
    direction = config_value(trigger, "direction", None)
    if direction:
        if direction not in ("left_to_right", "right_to_left"):
            raise SourceError(f"trigger.direction {direction!r}: the simulated conveyor runs "
                              "left_to_right or right_to_left")
        kwargs["direction"] = direction
    return kwargs


def simulated_source(camera: Any, trigger: Any = None, *, paced: bool = True,
                     output: str = "") -> SimulatedSource:
    """The ``camera.source = "simulated"`` plugin (entry point ``station.sources``)."""
    return SimulatedSource(paced=paced, output=output, **conveyor_settings(camera, trigger))
