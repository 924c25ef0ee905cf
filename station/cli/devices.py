"""``station devices``: which cameras, GenICam producers and serial ports this machine has.

The first question at a new station is "what is plugged in, and under which name"; the
answers here are the values the recipe's ``camera.device``, ``camera.cti`` and
``reject.port`` take.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from station.cli.numbers import count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--max-index", type=count(0), default=9, metavar="N",
        help="probe OpenCV camera indices 0..N (default 9)",
    )
    parser.add_argument("--no-cameras", action="store_true", help="skip the OpenCV camera probe")
    parser.add_argument("--no-genicam", action="store_true", help="skip GenICam producers")


def _serial_ports() -> list[dict[str, Any]]:
    from serial.tools import list_ports

    ports = []
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        ports.append(
            {
                "device": port.device,
                "description": port.description or "",
                "hwid": port.hwid or "",
                "vid": port.vid,
                "pid": port.pid,
                "serial_number": port.serial_number or "",
            }
        )
    return ports


def collect(max_index: int = 9, cameras: bool = True, genicam: bool = True) -> dict[str, Any]:
    """Everything ``station devices`` reports, as plain data."""
    from station.sources.genicam import find_producers, list_devices
    from station.sources.opencv_camera import probe_opencv_cameras, quiet_stderr

    result: dict[str, Any] = {"opencv_cameras": [], "genicam": [], "serial_ports": []}
    if cameras:
        result["opencv_cameras"] = [c.to_dict() for c in probe_opencv_cameras(max_index)]
    if genicam:
        try:
            import harvesters  # noqa: F401

            available = True
        except ImportError:
            available = False
        result["genicam_available"] = available
        if available:
            with quiet_stderr():
                reports = [list_devices(cti) for cti in find_producers()]
            result["genicam"] = [r.to_dict() for r in reports]
    result["serial_ports"] = _serial_ports()
    return result


def _print_text(info: dict[str, Any], cameras: bool, genicam: bool) -> None:
    print("OpenCV cameras (camera.source = 'opencv', camera.device):")
    if not cameras:
        print("  (not probed)")
    elif not info["opencv_cameras"]:
        print("  no cameras found")
    for cam in info["opencv_cameras"]:
        print(
            f"  {cam['device']:<14} {cam['width']}x{cam['height']} "
            f"@ {cam['fps']:g} fps  ({cam['backend']})"
        )
    print("GenICam producers (camera.source = 'genicam', camera.cti, camera.device):")
    if not genicam:
        print("  (not probed)")
    elif not info.get("genicam_available", False):
        print("  harvesters is not installed: pip install 'inspection-station[genicam]'")
    elif not info["genicam"]:
        print("  no GenTL producers found (GENICAM_GENTL64_PATH is empty)")
    for producer in info["genicam"]:
        print(f"  {producer['producer']}")
        if producer["error"]:
            print(f"    error: {producer['error']}")
        elif not producer["devices"]:
            print("    no devices")
        for dev in producer["devices"]:
            print(
                f"    [{dev['index']}] {dev['vendor']} {dev['model']}  "
                f"serial {dev['serial'] or '-'}  id {dev['id']}"
            )
    print("Serial ports (reject.port):")
    if not info["serial_ports"]:
        print("  no serial ports found")
    for port in info["serial_ports"]:
        print(f"  {port['device']:<14} {port['description']}  {port['hwid']}")


def run(args: argparse.Namespace) -> int:
    cameras, genicam = not args.no_cameras, not args.no_genicam
    info = collect(args.max_index, cameras=cameras, genicam=genicam)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_text(info, cameras, genicam)
    return 0
