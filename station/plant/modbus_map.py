"""The Modbus register map of the PLC handshake: addresses, and what a read or write means.

Pure logic over :class:`~station.plant.handshake.PlcHandshake`, no sockets: the server
(:mod:`station.plant.modbus_server`, whose docstring holds the map as a table) calls
:meth:`RegisterMap.read` and :meth:`RegisterMap.write` for every request. Values are computed
at each read, so a PLC never sees a stale copy.
"""

from __future__ import annotations

import logging
from enum import IntEnum

from station.plant.handshake import PlcHandshake, PlcState
from station.plant.host import SelectCode

log = logging.getLogger(__name__)


class Coil(IntEnum):
    """Read/write bits (function codes 1, 5, 15): the PLC's commands."""

    TRIGGER = 0
    RESULT_ACK = 1


class Input(IntEnum):
    """Read-only bits (function code 2): the station's state and the presented result."""

    READY = 0
    BUSY = 1
    ERROR = 2
    IDLE = 3
    RESULT_VALID = 4
    PASS = 5
    REJECT = 6
    RESULT_ERROR = 7
    REJECT_PULSE = 8
    ALARM = 9
    CHANGEOVER = 10


class Reg(IntEnum):
    """Read-only registers (function code 4; mirrored read-only at holding register
    ``MIRROR + n``). Two-register values are unsigned 32 bit, high word first."""

    STATE = 0
    HEARTBEAT = 1
    RESULT_SEQ = 2
    PART_ID_HI = 3
    PART_ID_LO = 4
    RESULT_CODE = 5
    AE_SCORE = 6
    CLS_SCORE = 7
    LATENCY_MS = 8
    RESULTS_WAITING = 9
    RECIPE_NUMBER = 10
    RECIPE_REQUESTED = 11
    RECIPE_STATUS = 12
    TRIGGER_STATUS = 13
    TRIGGER_PART_HI = 14
    TRIGGER_PART_LO = 15
    INSPECTED_HI = 16
    INSPECTED_LO = 17
    PASSED_HI = 18
    PASSED_LO = 19
    REJECTED_HI = 20
    REJECTED_LO = 21
    ERRORS_HI = 22
    ERRORS_LO = 23
    ALARMS = 24
    OVERRUNS = 25
    REJECT_PULSES = 26


N_COILS, N_INPUTS, N_REGS = len(Coil), len(Input), len(Reg)
RECIPE_SELECT = 0  # holding register 0: write a recipe number to change over
MIRROR = 100  # holding registers 100.. = input registers 0.., read-only
NO_SCORE = 0xFFFF  # a score register when the model is absent or there is no result


class TriggerStatus(IntEnum):
    """What became of the PLC's last Trigger (input register TRIGGER_STATUS)."""

    NONE = 0
    ACCEPTED = 1
    NOT_READY = 2  # Busy, Idle or Error: the Trigger write got exception 6 (device busy)
    NOT_PLC = 3  # trigger.mode is not "plc": exception 3 (illegal value)
    DEBOUNCED = 4  # within trigger.debounce_ms of the last: exception 6


class Refusal(IntEnum):
    """The Modbus exception codes the map answers with (as pymodbus's ExcCodes)."""

    ILLEGAL_ADDRESS = 2
    ILLEGAL_VALUE = 3
    DEVICE_BUSY = 6


def u16(value: float | int | None) -> int:
    """A register value: clamped to 0..65535 (65535 = not known)."""
    if value is None:
        return NO_SCORE
    return max(0, min(0xFFFE, int(round(value))))


def u32(value: int) -> tuple[int, int]:
    value = max(0, min(0xFFFFFFFF, int(value)))
    return value >> 16, value & 0xFFFF


def part_number(part_id: str) -> int:
    """A part id as the number a register holds (ids are counters; other text reads 0)."""
    return int(part_id) if part_id.isdigit() else 0


class RegisterMap:
    """Reads and writes of the four tables, on one :class:`PlcHandshake`."""

    def __init__(self, plc: PlcHandshake) -> None:
        self.plc = plc
        self.trigger_status = TriggerStatus.NONE
        self.trigger_part = ""
        self.refused_writes = 0

    # -- reads ----------------------------------------------------------------------------
    def inputs(self) -> list[bool]:
        plc = self.plc
        state = plc.state
        result = plc.current_result()
        bits = [False] * N_INPUTS
        bits[Input.READY] = state == PlcState.READY
        bits[Input.BUSY] = state == PlcState.BUSY
        bits[Input.ERROR] = state == PlcState.ERROR
        bits[Input.IDLE] = state == PlcState.IDLE
        bits[Input.RESULT_VALID] = result is not None
        bits[Input.PASS] = result is not None and result.code == 1
        bits[Input.REJECT] = result is not None and result.code == 2
        bits[Input.RESULT_ERROR] = result is not None and result.code == 3
        bits[Input.REJECT_PULSE] = plc.reject_pulse
        bits[Input.ALARM] = bool(plc.alarms())
        bits[Input.CHANGEOVER] = plc.select_code == SelectCode.IN_PROGRESS
        return bits

    def coils(self) -> list[bool]:
        bits = [False] * N_COILS
        bits[Coil.TRIGGER] = bool(self.plc.trigger_pending)
        bits[Coil.RESULT_ACK] = self.plc.ack_held
        return bits

    def registers(self) -> list[int]:
        plc = self.plc
        result = plc.current_result()
        regs = [0] * N_REGS
        regs[Reg.STATE] = int(plc.state)
        regs[Reg.HEARTBEAT] = plc.heartbeat
        if result is not None:
            regs[Reg.RESULT_SEQ] = result.seq & 0xFFFF
            regs[Reg.PART_ID_HI], regs[Reg.PART_ID_LO] = u32(part_number(result.part_id))
            regs[Reg.RESULT_CODE] = result.code
            regs[Reg.LATENCY_MS] = u16(result.latency_ms)
        regs[Reg.AE_SCORE] = u16(None if result is None or result.ae_score is None
                                 else result.ae_score * 1000)
        regs[Reg.CLS_SCORE] = u16(None if result is None or result.cls_score is None
                                  else result.cls_score * 1000)
        regs[Reg.RESULTS_WAITING] = u16(plc.results_waiting)
        regs[Reg.RECIPE_NUMBER] = u16(plc.recipe_number)
        regs[Reg.RECIPE_REQUESTED] = u16(part_number(plc.select_requested))
        regs[Reg.RECIPE_STATUS] = int(plc.select_code)
        regs[Reg.TRIGGER_STATUS] = int(self.trigger_status)
        regs[Reg.TRIGGER_PART_HI], regs[Reg.TRIGGER_PART_LO] = u32(
            part_number(self.trigger_part))
        counts = plc.counts
        for key, hi in (("inspected", Reg.INSPECTED_HI), ("passed", Reg.PASSED_HI),
                        ("rejected", Reg.REJECTED_HI), ("errors", Reg.ERRORS_HI)):
            regs[hi], regs[hi + 1] = u32(counts[key])
        regs[Reg.ALARMS] = u16(len(plc.alarms()))
        regs[Reg.OVERRUNS] = u16(plc.overruns)
        regs[Reg.REJECT_PULSES] = plc.host.pulse.pulses & 0xFFFF
        return regs

    def holding(self) -> dict[int, int]:
        """Holding registers: the recipe request (read/write) and the read-only mirror."""
        out = {RECIPE_SELECT: u16(part_number(self.plc.select_requested))}
        out.update({MIRROR + i: v for i, v in enumerate(self.registers())})
        return out

    # -- writes ---------------------------------------------------------------------------
    def write_coils(self, address: int, bits: list[bool]) -> Refusal | None:
        """The PLC writes coils ``address..``: Trigger (1 = trigger now), ResultAck (level)."""
        if address < 0 or address + len(bits) > N_COILS:
            return self._refuse(Refusal.ILLEGAL_ADDRESS, f"coil {address}..{address + len(bits) - 1}"
                                f": only coils 0..{N_COILS - 1} exist")
        for offset, bit in enumerate(bits):
            coil = Coil(address + offset)
            refusal = self._trigger(bit) if coil == Coil.TRIGGER else self._ack(bit)
            if refusal is not None:
                return refusal
        return None

    def _trigger(self, bit: bool) -> Refusal | None:
        if not bit:
            return None  # Trigger clears itself; writing 0 is allowed and does nothing
        ok, what = self.plc.trigger()
        if ok:
            self.trigger_status, self.trigger_part = TriggerStatus.ACCEPTED, what
            return None
        if what.startswith("trigger.mode"):
            self.trigger_status = TriggerStatus.NOT_PLC
            return self._refuse(Refusal.ILLEGAL_VALUE, f"Trigger: {what}")
        self.trigger_status = (TriggerStatus.DEBOUNCED if what.startswith("debounced")
                               else TriggerStatus.NOT_READY)
        return self._refuse(Refusal.DEVICE_BUSY, f"Trigger: {what}")

    def _ack(self, bit: bool) -> Refusal | None:
        ok, what = self.plc.set_ack(bit)
        return None if ok else self._refuse(Refusal.ILLEGAL_VALUE, f"ResultAck: {what}")

    def write_registers(self, address: int, values: list[int]) -> Refusal | None:
        """The PLC writes holding registers: only RECIPE_SELECT is writable."""
        if address != RECIPE_SELECT or len(values) != 1:
            return self._refuse(Refusal.ILLEGAL_ADDRESS, f"holding register {address} "
                                f"(x{len(values)}): only register {RECIPE_SELECT} is writable")
        code = self.plc.request_recipe(int(values[0]))
        if code == SelectCode.UNKNOWN:
            return self._refuse(Refusal.ILLEGAL_VALUE, self.plc.select_reason)
        if code == SelectCode.BUSY:
            return self._refuse(Refusal.DEVICE_BUSY, f"recipe {values[0]}: busy")
        return None

    def _refuse(self, code: Refusal, why: str) -> Refusal:
        self.refused_writes += 1
        log.info("Modbus write refused (exception %d): %s", int(code), why)
        return code
