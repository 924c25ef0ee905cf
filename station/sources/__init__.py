"""Frame sources behind one interface, built from the recipe's ``[camera]`` section."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

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
    "SkippedImage",
    "SourceError",
    "SourceInfo",
    "VideoFileSource",
    "make_source",
    "register_source",
]

SOURCE_KINDS = ("simulated", "opencv", "video", "folder", "genicam")

# A source the runtime does not carry itself (the simulated conveyor lives in station.sim, which
# the runtime never imports) is a plugin: a callable (camera, trigger, *, paced, output) ->
# FrameSource, registered under the entry-point group "station.sources" or with register_source.
PluginSource = Callable[..., FrameSource]
_PLUGINS: dict[str, PluginSource] = {}


def register_source(kind: str, factory: PluginSource) -> None:
    """Make ``camera.source = kind`` build its frames with ``factory``."""
    _PLUGINS[kind] = factory


def _plugin_source(kind: str) -> PluginSource | None:
    if kind not in _PLUGINS:
        for point in entry_points(group="station.sources", name=kind):
            _PLUGINS[kind] = point.load()
            break
    return _PLUGINS.get(kind)


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
    plugin = _plugin_source(kind)
    if plugin is not None:
        return plugin(camera, trigger, paced=paced, output=output)
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
