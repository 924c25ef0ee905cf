"""The station on the plant's network: the PLC handshake and the servers that carry it.

- :mod:`~station.plant.host`: :class:`StationHost`, the running engine across recipe
  changeovers, the numbered recipe catalogue, ``select_recipe``;
- :mod:`~station.plant.handshake`: :class:`PlcHandshake`, Idle/Ready/Busy/Error, Trigger,
  ResultValid/ResultAck, counts, alarms, recipe number, heartbeat, the Reject bit;
- :mod:`~station.plant.pulse`: :class:`RejectPulse`, the Reject bit the reject scheduler drives
  with ``reject.output = "plc"``;
- :mod:`~station.plant.modbus_server`: the Modbus TCP register map of the handshake;
- :mod:`~station.plant.mqtt` (with :mod:`~station.plant.outbox` and
  :mod:`~station.plant.payloads`): results, status and alarms on MQTT, buffered on disk.

Nothing here imports Qt, torch or the simulator: the window and the headless station share it.
"""

from station.plant.handshake import PlcHandshake, PlcResult, PlcState
from station.plant.host import (
    Changeover,
    RecipeEntry,
    SelectCode,
    StationHost,
    check_plc_needs,
    with_overrides,
)
from station.plant.pulse import RejectPulse

__all__ = [
    "Changeover",
    "PlcHandshake",
    "PlcResult",
    "PlcState",
    "RecipeEntry",
    "RejectPulse",
    "SelectCode",
    "StationHost",
    "check_plc_needs",
    "with_overrides",
]
