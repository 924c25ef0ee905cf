"""Frame sources behind one interface, built from the recipe's ``[camera]`` section."""

from __future__ import annotations

from typing import Any

from station.sim.source import SimulatedSource
from station.sources.acquisition import (
    CAMERA_LOST,
    CAMERA_RESTORED,
    IMAGE_SKIPPED,
    SOURCE_ENDED,
    Acquisition,
    AcquisitionStats,
    SkippedImage,
)
from station.sources.base import (
    BadImage,
    EndOfStream,
    Frame,
    FrameSource,
    SourceError,
    SourceInfo,
    check_output,
)
from station.sources.base import (
    config_value as _get,
)
from station.sources.folder import FolderSource
from station.sources.genicam import GenICamSource
from station.sources.opencv_camera import OpenCVCameraSource
from station.sources.video import VideoFileSource

__all__ = [
    "CAMERA_LOST",
    "CAMERA_RESTORED",
    "IMAGE_SKIPPED",
    "SOURCE_ENDED",
    "Acquisition",
    "AcquisitionStats",
    "BadImage",
    "EndOfStream",
    "FolderSource",
    "Frame",
    "FrameSource",
    "GenICamSource",
    "OpenCVCameraSource",
    "SimulatedSource",
    "SkippedImage",
    "SourceError",
    "SourceInfo",
    "VideoFileSource",
    "make_source",
]

SOURCE_KINDS = ("simulated", "opencv", "video", "folder", "genicam")


def make_source(camera: Any, trigger: Any = None, *, paced: bool = True) -> FrameSource:
    """The ``FrameSource`` the recipe's ``[camera]`` section describes.

    ``trigger`` (the recipe's ``[trigger]`` section) puts a GenICam camera in hardware or
    software trigger mode and gives the simulated conveyor its travel direction, so the
    camera and the trigger agree. ``paced=False`` runs files and the simulator flat out.
    """
    kind = str(_get(camera, "source", "simulated")).strip().lower()
    device = _get(camera, "device", "")
    fps = float(_get(camera, "fps", 0.0) or 0.0)
    loop = bool(_get(camera, "loop", False))
    output = check_output(str(_get(camera, "pixel_format", "")))
    if kind == "simulated":
        sim = _get(camera, "simulated", None)
        kwargs: dict[str, Any] = {}
        for key in ("width", "height", "fps", "speed_px_s", "pitch_px", "defect_rate", "seed",
                    "color"):
            value = _get(sim, key, None)
            if value is not None:
                kwargs[key] = value
        defects = _get(sim, "defects", None)
        if defects:
            kwargs["defects"] = tuple(defects)
        images = _get(sim, "images", None)
        if images:
            kwargs["part_images"] = images
        direction = _get(trigger, "direction", None)
        if direction:
            if direction not in ("left_to_right", "right_to_left"):
                raise SourceError(
                    f"trigger.direction {direction!r}: the simulated conveyor runs "
                    "left_to_right or right_to_left"
                )
            kwargs["direction"] = direction
        return SimulatedSource(paced=paced, output=output, **kwargs)
    if kind == "opencv":
        return OpenCVCameraSource(device, backend=str(_get(camera, "backend", "any") or "any"),
                                  **_camera_settings(camera, fps, output))
    if kind == "video":
        if not device:
            raise SourceError("camera.device must name the video file when camera.source = 'video'")
        return VideoFileSource(device, loop=loop, paced=paced, fps=fps, output=output)
    if kind == "folder":
        if not device:
            raise SourceError("camera.device must name the image folder when camera.source = 'folder'")
        return FolderSource(device, fps=fps or 10.0, loop=loop, paced=paced, output=output)
    if kind == "genicam":
        mode = str(_get(trigger, "mode", "free_run"))
        camera_trigger = {"hardware": "hardware"}.get(mode, "off")
        return GenICamSource(_get(camera, "cti", "") or "", device, trigger=camera_trigger,
                             **_camera_settings(camera, fps, output))
    raise SourceError(f"camera.source {kind!r} is unknown; expected one of {', '.join(SOURCE_KINDS)}")


def _camera_settings(camera: Any, fps: float, output: str) -> dict[str, Any]:
    """What a real camera (OpenCV or GenICam) is asked for: size, rate, exposure, gain."""
    return {"width": int(_get(camera, "width", 0)), "height": int(_get(camera, "height", 0)),
            "fps": fps, "exposure_us": float(_get(camera, "exposure_us", 0.0)),
            "gain_db": _get(camera, "gain_db", None), "output": output}
