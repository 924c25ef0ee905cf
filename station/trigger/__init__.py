"""What starts an inspection: a part crossing a line, a sensor on the serial link, a button, the camera.

Five ways a part announces itself, all ending in the same ``TriggerEvent`` (``base``):

* ``FreeRunTrigger`` (``freerun``) watches every frame for parts and fires once when a part's
  centre crosses a line across the travel direction (no sensor needed);
* ``SerialTrigger`` (``serial``) hears a sensor through the serial link and takes the frame
  closest in time to the pulse;
* ``SoftwareTrigger`` (``software``) is the operator's button: the latest frame;
* ``HardwareTrigger`` (``hardware``) is a GenICam camera in trigger mode: each delivered frame
  is a part;
* ``PlcTrigger`` (``plc``) is the PLC's Trigger (station.plant): the latest frame (the first,
  when it comes before any).

Frame-driven triggers are fed with ``on_frame(frame)`` (every frame, in order, e.g. from an
``Acquisition`` frame listener); all triggers also deliver their events to listeners.
``make_trigger`` (``make``) builds the one a recipe describes.
"""

from station.trigger.base import (  # public: import from station.trigger
    PartCounter,
    Trigger,
    TriggerEvent,
)
from station.trigger.freerun import FreeRunTrigger
from station.trigger.hardware import HardwareTrigger
from station.trigger.make import make_trigger
from station.trigger.plc import PlcTrigger
from station.trigger.serial import SerialTrigger
from station.trigger.software import SoftwareTrigger

__all__ = [
    "FreeRunTrigger",
    "HardwareTrigger",
    "PartCounter",
    "PlcTrigger",
    "SerialTrigger",
    "SoftwareTrigger",
    "Trigger",
    "TriggerEvent",
    "make_trigger",
]
