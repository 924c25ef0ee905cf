"""Industrial (GigE Vision / USB3 Vision) cameras through a GenTL producer and harvesters.

harvesters is an optional extra (``pip install 'inspection-station[genicam]'``); it is
imported only when a GenICam source is opened or listed, so the station runs without it.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from station.sources.base import Frame, FrameSource, SourceError, check_output, to_output

TRIGGER_MODES = ("off", "software", "hardware")

_BAYER_TO_BGR = {
    "BayerRG8": cv2.COLOR_BayerRG2BGR,  # OpenCV names Bayer patterns from the second row
    "BayerGR8": cv2.COLOR_BayerGR2BGR,
    "BayerBG8": cv2.COLOR_BayerBG2BGR,
    "BayerGB8": cv2.COLOR_BayerGB2BGR,
}


def _harvesters():
    try:
        from harvesters.core import Harvester
    except ImportError as exc:
        raise SourceError(
            "GenICam cameras need harvesters: pip install 'inspection-station[genicam]' "
            f"({exc})"
        ) from None
    return Harvester


def bundled_producer() -> Path | None:
    """The simulated 'viky' GenTL producer shipped inside the genicam wheel, if installed."""
    spec = importlib.util.find_spec("genicam")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "viky.cti"
        if path.is_file():
            return path
    return None


GENTL_PATH_ENV = "STATION_GENTL_PATH"


def trusted_producer_folders() -> list[Path]:
    """Folders whose GenTL producers (.cti) the station may load.

    A producer is native code run inside the station, so it is loaded only from where the
    machine's administrator put it: the folders of GENICAM_GENTL64_PATH (set by camera
    vendors' installers), the folders of STATION_GENTL_PATH (for producers installed
    elsewhere), and the genicam wheel's own folder (its simulated 'viky' camera). A recipe
    (or anyone who can edit one) cannot point at a .cti anywhere else.
    """
    folders: list[Path] = []
    for env in ("GENICAM_GENTL64_PATH", GENTL_PATH_ENV):
        folders.extend(Path(f) for f in os.environ.get(env, "").split(os.pathsep) if f.strip())
    spec = importlib.util.find_spec("genicam")
    if spec is not None and spec.submodule_search_locations:
        folders.extend(Path(loc) for loc in spec.submodule_search_locations)
    return folders


def producer_problem(cti: str | Path) -> str | None:
    """Why ``cti`` may not be loaded (one line), or None when it is a .cti file in a trusted
    folder (:func:`trusted_producer_folders`). The file's own folder is compared after
    resolving links, so ``trusted/../elsewhere/x.cti`` does not pass."""
    if "\0" in os.fspath(cti):
        return "camera.cti: expected a path without NUL characters"
    path = Path(os.path.abspath(os.fspath(cti)))
    if path.suffix.lower() != ".cti":
        return f'camera.cti = "{cti}": expected a GenTL producer file ending in .cti'
    try:
        if not path.is_file():
            return f'camera.cti = "{cti}": expected an existing file (not found: {path})'
        folder = path.parent.resolve(strict=True)
        trusted = {f.resolve() for f in trusted_producer_folders() if f.is_dir()}
    except (OSError, RuntimeError, ValueError) as exc:
        return f'camera.cti = "{cti}": cannot check its folder ({exc})'
    if folder in trusted:
        return None
    return (f'camera.cti = "{cti}": refused: GenTL producers are native code and load '
            f"only from a folder in GENICAM_GENTL64_PATH or {GENTL_PATH_ENV} (or the genicam "
            f"wheel); add {folder} to {GENTL_PATH_ENV} if you trust it")


def find_producers() -> list[Path]:
    """GenTL producers (.cti) on ``GENICAM_GENTL64_PATH`` and ``STATION_GENTL_PATH``, then the
    genicam wheel's viky: the trusted folders, nothing else."""
    found: list[Path] = []
    folders = [f for env in ("GENICAM_GENTL64_PATH", GENTL_PATH_ENV)
               for f in os.environ.get(env, "").split(os.pathsep)]
    for folder in folders:
        if folder and os.path.isdir(folder):
            found.extend(Path(p) for p in sorted(glob.glob(os.path.join(folder, "*.cti"))))
    viky = bundled_producer()
    if viky is not None:
        found.append(viky)
    unique: list[Path] = []
    for path in found:
        if path.resolve() not in [u.resolve() for u in unique]:
            unique.append(path)
    return unique


@dataclass(frozen=True)
class GenICamDevice:
    """One device a producer offers, as ``station devices`` lists it."""

    producer: str
    index: int
    vendor: str
    model: str
    serial: str
    id: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class ProducerReport:
    """A producer and its devices, or why it could not be read."""

    producer: str
    devices: list[GenICamDevice] = field(default_factory=list)
    error: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "producer": self.producer,
            "devices": [d.to_dict() for d in self.devices],
            "error": self.error,
        }


def list_devices(cti: str | Path) -> ProducerReport:
    """The devices behind one producer; errors are reported, not raised."""
    report = ProducerReport(producer=str(cti))
    problem = producer_problem(cti)
    if problem:
        report.error = problem
        return report
    try:
        harvester = _harvesters()()
    except SourceError as exc:
        report.error = str(exc)
        return report
    try:
        harvester.add_file(str(cti), check_existence=True)
        harvester.update()
        for i, info in enumerate(harvester.device_info_list):
            report.devices.append(
                GenICamDevice(
                    producer=str(cti),
                    index=i,
                    vendor=_info(info, "vendor"),
                    model=_info(info, "model"),
                    serial=_info(info, "serial_number"),
                    id=_info(info, "id_"),
                )
            )
    except Exception as exc:  # a broken producer must not hide the others
        report.error = f"{type(exc).__name__}: {exc}"
    finally:
        harvester.reset()
    return report


def _info(device_info: Any, key: str) -> str:
    """A device-info property; producers raise for the ones they do not support."""
    try:
        return str(getattr(device_info, key) or "")
    except Exception:
        return ""


def _node(node_map: Any, name: str) -> Any | None:
    return getattr(node_map, name) if node_map.has_node(name) else None


def _writable(node: Any) -> bool:
    try:
        from genicam.genapi import EAccessMode

        return node.node.get_access_mode() in (EAccessMode.RW, EAccessMode.WO)
    except Exception:
        return False


def to_bgr_or_gray(data: np.ndarray, width: int, height: int, pixel_format: str) -> np.ndarray:
    """Copy a GenTL buffer into an image the station can use (gray or BGR, uint8)."""
    if pixel_format == "Mono8":
        return data.reshape(height, width).copy()
    if pixel_format in ("Mono10", "Mono12", "Mono14", "Mono16"):
        bits = int(pixel_format[4:])
        return (data.reshape(height, width).astype(np.uint16) >> (bits - 8)).astype(np.uint8)
    if pixel_format == "RGB8":
        return cv2.cvtColor(data.reshape(height, width, 3), cv2.COLOR_RGB2BGR)
    if pixel_format == "BGR8":
        return data.reshape(height, width, 3).copy()
    if pixel_format in ("RGBa8", "RGBA8"):
        return cv2.cvtColor(data.reshape(height, width, 4), cv2.COLOR_RGBA2BGR)
    if pixel_format in ("BGRa8", "BGRA8"):
        return cv2.cvtColor(data.reshape(height, width, 4), cv2.COLOR_BGRA2BGR)
    if pixel_format in _BAYER_TO_BGR:
        return cv2.cvtColor(data.reshape(height, width), _BAYER_TO_BGR[pixel_format])
    raise SourceError(
        f"GenICam pixel format {pixel_format!r} is not supported; set camera.pixel_format to "
        "Mono8, Mono10/12/16, RGB8, BGR8, RGBa8 or a Bayer*8 format"
    )


def _preferred_format(offered: tuple[str, ...], output: str) -> str:
    """The camera format that gives the pipeline's format with the least work ('' = keep)."""
    if output == "mono8":
        order = ["Mono8"]
    elif output == "bgr8":
        order = ["BGR8", "RGB8", "BGRa8", "RGBa8", *_BAYER_TO_BGR]
    else:
        return ""
    return next((f for f in order if f in offered), "")


class GenICamSource(FrameSource):
    """One GenICam camera: configure its nodes, stream, copy each buffer out, requeue it.

    ``device`` selects the camera: empty = the first, digits = an index, otherwise a serial
    number, device id or user-defined name. ``pixel_format`` is the camera's own format name
    ('' = the one that best gives ``output``, the pipeline's 'mono8' / 'bgr8'). ``trigger`` = ``"hardware"`` puts the camera in
    trigger mode on ``trigger_source`` (each delivered frame is then a part); ``"software"``
    arms ``TriggerSoftware`` (see ``trigger_software``). Settings the camera lacks or refuses
    are listed in ``info.unapplied``; a trigger the camera cannot do is an error, because a
    free-running camera would be taken for one that sees a part per frame.
    """

    def __init__(
        self,
        cti: str | Path,
        device: str | int | None = "",
        *,
        width: int = 0,
        height: int = 0,
        fps: float = 0.0,
        exposure_us: float = 0.0,
        gain_db: float | None = None,
        pixel_format: str = "",
        output: str = "",
        trigger: str = "off",
        trigger_source: str = "Line0",
        num_buffers: int = 8,
    ) -> None:
        self.cti = Path(cti) if cti else None
        self.device = "" if device is None else str(device).strip()
        super().__init__(f"genicam:{self.device or 0}")
        if trigger not in TRIGGER_MODES:
            raise SourceError(f"GenICam trigger {trigger!r}: expected one of {TRIGGER_MODES}")
        self.width, self.height, self.fps = int(width or 0), int(height or 0), float(fps or 0)
        self.exposure_us = float(exposure_us or 0.0)
        self.gain_db = gain_db
        self.pixel_format = (pixel_format or "").strip()
        self.output = check_output(output)
        self.trigger = trigger
        self.trigger_source = trigger_source
        self.num_buffers = num_buffers
        self._harvester = None
        self._ia = None
        self._info.triggered = trigger != "off"

    # -- open -------------------------------------------------------------------------
    def open(self) -> None:
        self.close()
        cti = self.cti or bundled_producer()
        if cti is None:
            raise SourceError("camera.cti is empty and no GenTL producer was found")
        problem = producer_problem(cti)
        if problem:
            raise SourceError(problem)
        harvester = _harvesters()()
        self._harvester = harvester
        try:
            harvester.add_file(str(cti))
            harvester.update()
            if not harvester.device_info_list:
                raise SourceError(f"GenTL producer {cti} sees no camera")
            self._ia = ia = harvester.create(self._search_key(harvester))
            ia.num_buffers = self.num_buffers
            node_map = ia.remote_device.node_map
            self._info.unapplied = self._configure(node_map)
            self._info.width = int(node_map.Width.value)
            self._info.height = int(node_map.Height.value)
            rate = _node(node_map, "AcquisitionFrameRate")
            self._info.fps = float(rate.value) if rate is not None else self.fps
            ia.start()
        except SourceError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise SourceError(f"GenICam camera {self.device or 0} via {cti}: {exc}") from exc

    def _search_key(self, harvester: Any) -> int | dict[str, str]:
        if not self.device:
            return 0
        if self.device.isdigit():
            index = int(self.device)
            if index >= len(harvester.device_info_list):
                raise SourceError(
                    f"GenICam device index {index} out of range: the producer has "
                    f"{len(harvester.device_info_list)} device(s)"
                )
            return index
        for key in ("serial_number", "id_", "user_defined_name"):
            for info in harvester.device_info_list:
                if _info(info, key) == self.device:
                    return {key: self.device}
        known = [
            f"{_info(i, 'serial_number')} ({_info(i, 'id_')})" for i in harvester.device_info_list
        ]
        raise SourceError(f"GenICam device {self.device!r} not found; present: {known}")

    def _configure(self, nm: Any) -> list[str]:
        refused: list[str] = []

        def put(name: str, value: Any, label: str | None = None) -> bool:
            node = _node(nm, name)
            label = label or name
            if node is None:
                refused.append(f"{label}={value} (camera has no {name} node)")
                return False
            if not _writable(node):
                refused.append(f"{label}={value} ({name} is not writable now)")
                return False
            try:
                node.value = value
            except Exception as exc:
                refused.append(f"{label}={value} ({type(exc).__name__}: {exc})")
                return False
            return True

        node = _node(nm, "PixelFormat")
        symbols = tuple(node.symbolics) if node is not None else ()
        wanted = self.pixel_format or _preferred_format(symbols, self.output)
        if wanted:
            if symbols and wanted not in symbols:
                raise SourceError(
                    f"GenICam pixel format {wanted!r} is not offered by the "
                    f"camera; it offers {', '.join(symbols)}"
                )
            put("PixelFormat", wanted)
        if self.width:
            put("Width", self.width)
        if self.height:
            put("Height", self.height)
        if self.fps:
            if _node(nm, "AcquisitionFrameRateEnable") is not None:
                put("AcquisitionFrameRateEnable", True)
            put("AcquisitionFrameRate", self.fps)
        if self.exposure_us:
            if _node(nm, "ExposureAuto") is not None:
                put("ExposureAuto", "Off")
            put("ExposureTime", self.exposure_us, "exposure_us")
        if self.gain_db is not None:
            if _node(nm, "GainAuto") is not None:
                put("GainAuto", "Off")
            put("Gain", float(self.gain_db), "gain_db")
        self._configure_trigger(nm)
        return refused

    def _configure_trigger(self, nm: Any) -> None:
        mode = _node(nm, "TriggerMode")
        if self.trigger == "off":
            if mode is not None and _writable(mode):
                mode.value = "Off"
            return
        source = _node(nm, "TriggerSource")
        if mode is None or source is None:
            raise SourceError(
                f"trigger mode {self.trigger!r} needs a camera with TriggerMode and "
                "TriggerSource nodes; this camera has none (use trigger.mode = 'free_run')"
            )
        selector = _node(nm, "TriggerSelector")
        if selector is not None and "FrameStart" in tuple(selector.symbolics):
            selector.value = "FrameStart"
        wanted = "Software" if self.trigger == "software" else self.trigger_source
        if wanted not in tuple(source.symbolics):
            raise SourceError(
                f"camera trigger source {wanted!r} is not offered; it offers "
                f"{', '.join(source.symbolics)}"
            )
        source.value = wanted
        mode.value = "On"

    # -- frames -----------------------------------------------------------------------
    def trigger_software(self) -> None:
        """Make the camera (in software trigger mode) expose one frame now."""
        if self._ia is None:
            raise SourceError("GenICam camera is not open")
        node = _node(self._ia.remote_device.node_map, "TriggerSoftware")
        if node is None:
            raise SourceError("this camera has no TriggerSoftware command")
        node.execute()

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._ia is None:
            raise SourceError("GenICam camera is not open")
        try:
            buffer = self._ia.try_fetch(timeout=timeout)
        except Exception as exc:
            raise SourceError(f"GenICam camera {self.device or 0} failed: {exc}") from exc
        if buffer is None:
            return None
        t = time.monotonic()
        try:  # copy out before the buffer goes back to the producer's queue
            component = buffer.payload.components[0]
            image = to_bgr_or_gray(
                component.data, int(component.width), int(component.height),
                str(component.data_format),
            )
            image = to_output(image, self.output)
        finally:
            buffer.queue()
        return Frame(image, self._next_seq(), t, self.name)

    def close(self) -> None:
        if self._ia is not None:
            try:
                self._ia.stop()
                self._ia.destroy()
            except Exception:  # closing a camera that vanished must not raise
                pass
            self._ia = None
        if self._harvester is not None:
            with contextlib.suppress(Exception):
                self._harvester.reset()
            self._harvester = None
