"""Browse recent rejects from the records: the crop, the map of the model that decided it
(named), the scores and the reason, so a shift lead can see *why* and *where* parts were
thrown off without opening the database.

A reject whose output failed (the part was judged REJECT but never pushed off the line) is
marked: its row is red with "OUTPUT FAILED", since that part may be among the good ones."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import cv2
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from station.pipeline.overlay import MAP_IMAGE_KINDS, map_label, map_source_of_kind
from station.ui.formatting import score_text
from station.ui.part_view import ScaledImage

COLUMNS = ("time", "part", "verdict", "output", "anomaly", "defect", "reason")
OUTPUT_FAILED = "OUTPUT FAILED"
FAILED_BG = QColor("#ffcdd2")
# the reject scheduler's action for the part, as the operator reads it
OUTPUTS = {"reject": "sent", "reject_failed": OUTPUT_FAILED, "pass": "none",
           "not_fired": "not fired (manual)"}


def output_text(row: dict) -> str:
    """What happened at the reject point: sent, OUTPUT FAILED, none, or — (not yet known)."""
    return OUTPUTS.get(str(row.get("reject_action") or ""), "—")


def _fmt(score: Any) -> str:
    return score_text(None if score is None else float(score))


class RejectsBrowser(QDialog):
    """Recent REJECT (and optionally ERROR) rows of ``records``, newest first."""

    def __init__(self, records: Any, parent: QWidget | None = None, n: int = 200) -> None:
        super().__init__(parent)
        self.setWindowTitle("Recent rejects")
        self.resize(1100, 650)
        self.records = records
        self.n = n
        self.rows: list[dict] = []
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c.capitalize() for c in COLUMNS])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._show_selected)
        self.with_errors = QCheckBox("include errors")
        self.with_errors.toggled.connect(self.reload)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.reload)
        self.crop = ScaledImage("crop")
        self.heat = ScaledImage("map")
        self.map_source = QLabel("")
        self.map_source.setWordWrap(True)
        self.detail = QLabel("select a part")
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        images = QWidget()
        il = QVBoxLayout(images)
        pics = QHBoxLayout()
        pics.addWidget(self.crop)
        pics.addWidget(self.heat)
        il.addLayout(pics, 1)
        il.addWidget(self.map_source)
        il.addWidget(self.detail)
        split = QSplitter()
        split.addWidget(self.table)
        split.addWidget(images)
        split.setSizes([550, 550])
        top = QHBoxLayout()
        top.addWidget(self.with_errors)
        top.addStretch(1)
        top.addWidget(refresh)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(split, 1)
        self.reload()

    def reload(self) -> None:
        rows = self.records.recent(self.n, "REJECT")
        if self.with_errors.isChecked():
            rows += self.records.recent(self.n, "ERROR")
            rows.sort(key=lambda r: r.get("time_epoch") or 0.0, reverse=True)
        self.rows = rows[: self.n]
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            reason = r.get("reasons") or r.get("error") or ""
            output = output_text(r)
            values = (str(r.get("time_iso", ""))[11:19], str(r.get("part_id", "")),
                      str(r.get("verdict", "")), output, _fmt(r.get("ae_score")),
                      _fmt(r.get("cls_score")), reason)
            for j, v in enumerate(values):
                item = QTableWidgetItem(v)
                if output == OUTPUT_FAILED:
                    item.setBackground(QBrush(FAILED_BG))
                    item.setToolTip(f"reject output failed: {r.get('reject_reason') or ''}")
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        if self.rows:
            self.table.selectRow(0)
        else:
            self.detail.setText("no rejects recorded yet")

    def _show_selected(self) -> None:
        sel = self.table.selectionModel().selectedRows()
        if not sel:
            return
        r = self.rows[sel[0].row()]
        shown = {"crop": self.crop, **{kind: self.heat for kind in MAP_IMAGE_KINDS.values()}}
        kinds = {image["kind"] for image in r.get("images", [])}
        source = next((map_source_of_kind(k) for k in kinds if map_source_of_kind(k)), "")
        self.map_source.setText(map_label(source))
        if "frame" in kinds:  # an ERROR's frame: what made the part uninspectable
            shown["frame"] = self.heat if "crop" in kinds else self.crop
        for widget in shown.values():
            widget.set_image(None)
            widget.setText("no image stored")
        for image in r.get("images", []):
            found = shown.get(image["kind"])
            if found is None:
                continue
            widget = found
            if image.get("deleted"):
                widget.setText("image deleted (disk budget)")
                continue
            picture = cv2.imread(str(Path(image["path"])), cv2.IMREAD_UNCHANGED)
            if picture is None:
                widget.setText(f"cannot read {image['path']}")
            else:
                widget.set_image(picture)
        self.detail.setText(
            f"<b>part #{r.get('part_id')}</b> — {r.get('verdict')} at {r.get('time_iso')}<br>"
            f"anomaly {_fmt(r.get('ae_score'))} (raw {_fmt(r.get('ae_score_raw'))}), "
            f"defect {_fmt(r.get('cls_score'))} (raw {_fmt(r.get('cls_score_raw'))})<br>"
            f"reason: {r.get('reasons') or r.get('error') or '—'}<br>"
            + (f"<b style='color:#c62828'>REJECT OUTPUT FAILED: the part was not removed"
               f"</b> ({html.escape(str(r.get('reject_reason') or ''))})<br>" if output_text(r) == OUTPUT_FAILED
               else "")
            + f"trigger: {r.get('trigger_source') or '—'}  "
            f"reject output: {output_text(r)}  recipe: {r.get('recipe')}  "
            f"latency {_fmt(r.get('latency_ms'))} ms")
