"""The port's modem lines: which ones exist, and what a port without them can and cannot do.

A reject output may be a pulse on an output line (DTR, RTS) and a trigger a rising edge on an
input line (CTS, DSR, CD, RI). A pseudo-terminal or a bare USB adapter has no such lines: the
kernel answers ENOTTY or EINVAL, which is a setting to change, not a port to reopen.
"""

from __future__ import annotations

import errno

import serial

OUTPUT_LINES = ("DTR", "RTS")
INPUT_LINES = ("CTS", "DSR", "CD", "RI")

NO_MODEM_LINES = (
    "this port has no modem lines ({port}: {error}); a pseudo-terminal or a USB adapter "
    "without DTR/RTS/CTS/DSR wiring cannot pulse or watch a line — use mode=message "
    "for the reject output (and a byte message for the trigger)"
)


class SerialLinkError(RuntimeError, ValueError):
    """A configuration the port cannot honour (bad line name, no modem lines).

    Also a ``ValueError``: it is a bad setting, and start-up reports those in one line.
    """


def lacks_modem_lines(exc: BaseException) -> bool:
    """True when ``exc`` is the kernel saying this port has no modem lines."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOTTY, errno.EINVAL)


def check_pulse(line: str, width_ms: float) -> float:
    """The pulse's width in seconds; ``SerialLinkError`` for a line or width it cannot have."""
    if line not in OUTPUT_LINES:
        raise SerialLinkError(f"reject line {line!r}: expected one of {', '.join(OUTPUT_LINES)}")
    if width_ms <= 0:
        raise SerialLinkError(f"pulse width must be > 0 ms, got {width_ms!r}")
    return width_ms / 1000.0


def check_trigger_line(line: str) -> None:
    """``SerialLinkError`` unless ``line`` is '' (none) or an input modem line."""
    if line and line not in INPUT_LINES:
        raise SerialLinkError(
            f"trigger line {line!r} is not an input modem line: expected one of "
            f"{', '.join(INPUT_LINES)} (or '' for none)"
        )


def check_output_lines(port: serial.SerialBase, name: str) -> None:
    """Raise ``SerialLinkError`` if ``port`` cannot drive DTR/RTS (``name`` for the message)."""
    try:
        port.dtr = port.dtr
    except OSError as exc:
        if lacks_modem_lines(exc):
            raise SerialLinkError(NO_MODEM_LINES.format(port=name, error=exc)) from exc
        raise


def read_input_lines(port: serial.SerialBase) -> dict[str, bool]:
    """The input modem lines now; {} if the port cannot say."""
    try:
        return {name: bool(getattr(port, name.lower())) for name in INPUT_LINES}
    except (OSError, serial.SerialException):
        return {}
