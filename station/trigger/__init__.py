"""What starts an inspection: a part crossing a line, a sensor on the serial link, a button, the camera."""

from station.trigger.triggers import (  # the package's public names: import them from station.trigger
    FreeRunTrigger,
    HardwareTrigger,
    PartCounter,
    SerialTrigger,
    SoftwareTrigger,
    Trigger,
    TriggerEvent,
    make_trigger,
)

__all__ = [
    "FreeRunTrigger",
    "HardwareTrigger",
    "PartCounter",
    "SerialTrigger",
    "SoftwareTrigger",
    "Trigger",
    "TriggerEvent",
    "make_trigger",
]
