"""Shared set-up of the plant tests: recipes on tiny real models, a PLC-triggered folder line."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.test_engine import part_frames, write_recipe

PLC_MODBUS = "[modbus]\nenabled = true\nhost = \"127.0.0.1\"\nport = {port}\n"


def folder_recipe(folder: Path, models: Path, *, name: str = "recipe", trigger: str = "plc",
                  reject: str = "enabled = false", extra: str = "", number: int = 0,
                  frames: Path | None = None, port: int = 5020) -> Path:
    """A recipe file ``<name>.toml`` in ``folder``: a looping photo folder (one part per
    frame), the tiny models, ``trigger.mode`` and a Modbus section (so a PLC can trigger)."""
    frames = frames or part_frames(folder / "frames", 6)
    (folder / "records").mkdir(parents=True, exist_ok=True)
    sub = folder / f".{name}"
    sub.mkdir(exist_ok=True)
    path = write_recipe(
        sub, models, camera=f'source = "folder"\ndevice = "{frames}"\nfps = 20\nloop = true',
        trigger=f'mode = "{trigger}"\ndebounce_ms = 0', reject=reject,
        extra=extra + "\n" + PLC_MODBUS.format(port=port))
    text = path.read_text().replace('name = "test-part"',
                                    f'name = "{name} part"\nnumber = {number}', 1)
    text = text.replace(str(sub / "records"), str(folder / "records"))
    target = folder / f"{name}.toml"
    target.write_text(text)
    path.unlink()
    sub.rmdir()
    return target
