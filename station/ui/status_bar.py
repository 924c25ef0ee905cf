"""The status bar: camera, preview and inspection rates, latency, dropped frames, serial link
and the models in use — what an engineer checks first when the line misbehaves."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QLabel, QSizePolicy, QStatusBar, QWidget


class StationStatusBar(QStatusBar):
    """``update_stats(stats, shown_fps)`` from a timer."""

    FIELDS = ("camera", "preview", "inspect", "latency", "dropped", "serial", "models")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.labels: dict[str, QLabel] = {}
        for key in self.FIELDS:
            label = QLabel("")
            self.labels[key] = label
            if key == "models":  # may be long: it gives way, never widens the window
                label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
                self.addPermanentWidget(label, 1)
            else:
                self.addWidget(label)

    def update_stats(self, s: Any, shown_fps: float) -> None:
        self.labels["camera"].setText(f"camera {s.camera_fps:4.1f} fps ({s.source})")
        self.labels["preview"].setText(f"preview {shown_fps:4.1f} fps")
        self.labels["inspect"].setText(f"inspection {s.inspect_fps:4.1f} parts/s")
        self.labels["latency"].setText(f"latency p50 {s.latency_p50_ms:5.1f} ms  "
                                       f"p99 {s.latency_p99_ms:5.1f} ms")
        self.labels["dropped"].setText(f"dropped frames {s.dropped_frames}  late parts {s.late}")
        self.labels["dropped"].setToolTip("dropped frames: camera frames the inspection did not "
                                          "take (normal in free-run); late parts: triggered "
                                          "parts the inspection could not take in time")
        serial = s.serial_state
        colour = {"connected": "#66bb6a", "off": "#b0bec5"}.get(serial, "#ef5350")
        self.labels["serial"].setText(f"serial <b style='color:{colour}'>{serial}</b>")
        models = "models " + (", ".join(s.models.values()) or "none")
        self.labels["models"].setText(models)
        self.labels["models"].setToolTip(models)
