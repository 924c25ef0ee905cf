"""Colours and fonts chosen to be read from a metre or two away, under factory lighting."""

from __future__ import annotations

PASS_BG = "#1b8a3a"
REJECT_BG = "#c62828"
ERROR_BG = "#f0a000"
IDLE_BG = "#455a64"
TEXT_ON_COLOUR = {"PASS": "#ffffff", "REJECT": "#ffffff", "ERROR": "#1a1a1a", "": "#eceff1"}
VERDICT_BG = {"PASS": PASS_BG, "REJECT": REJECT_BG, "ERROR": ERROR_BG, "": IDLE_BG}

ALARM_BG = "#d32f2f"
ALARM_BG_BLINK = "#8e0000"
ALARM_CLEARED_BG = "#f9a825"

WINDOW_BG = "#263238"
PANEL_BG = "#37474f"
TEXT = "#eceff1"
MUTED = "#b0bec5"

# pyqtgraph pens (hex without '#')
AE_PEN = "#4fc3f7"
CLS_PEN = "#ffb74d"
THRESHOLD_PEN = "#ef5350"
LATENCY_PEN = "#aed581"

STYLE = f"""
QMainWindow, QWidget {{ background: {WINDOW_BG}; color: {TEXT}; }}
QGroupBox {{ border: 1px solid #546e7a; border-radius: 6px; margin-top: 14px;
             padding-top: 6px; font-weight: bold; }}
QGroupBox::title {{ subcontrol-origin: margin; left: 10px; padding: 0 4px; color: {MUTED}; }}
QPushButton {{ background: #546e7a; border: 1px solid #78909c; border-radius: 6px;
               padding: 6px 14px; }}
QPushButton:hover {{ background: #607d8b; }}
QPushButton:disabled {{ color: #78909c; background: #455a64; }}
QComboBox, QLineEdit, QSpinBox, QDoubleSpinBox {{ background: #eceff1; color: #111;
               border-radius: 4px; padding: 3px 6px; }}
QComboBox QAbstractItemView {{ background: #eceff1; color: #111; }}
QStatusBar {{ background: #1c262b; color: {MUTED}; }}
QStatusBar QLabel {{ background: transparent; color: {MUTED}; padding: 0 8px; }}
QTabWidget::pane {{ border: 1px solid #546e7a; }}
QTabBar::tab {{ background: #455a64; padding: 6px 14px; }}
QTabBar::tab:selected {{ background: #607d8b; }}
QTableWidget {{ background: #eceff1; color: #111; }}
QHeaderView::section {{ background: #cfd8dc; color: #111; }}
QCheckBox::indicator {{ width: 16px; height: 16px; background: #eceff1;
                        border: 1px solid #90a4ae; border-radius: 3px; }}
QCheckBox::indicator:checked {{ background: #29b6f6; }}
QToolBar {{ border: none; spacing: 6px; padding: 4px; }}
QDockWidget::title {{ background: #ff8f00; color: #111; padding: 4px; }}
"""

START_STYLE = "QPushButton { background: #2e7d32; font-size: 22px; font-weight: bold; }"
STOP_STYLE = "QPushButton { background: #b71c1c; font-size: 22px; font-weight: bold; }"


def start_style(running: bool, scale: float = 1.0) -> str:
    """The START (green) / STOP (red) button, its text scaled with the window."""
    colour = "#b71c1c" if running else "#2e7d32"
    size = max(12, round(22 * (scale or 1.0)))
    return f"QPushButton {{ background: {colour}; font-size: {size}px; font-weight: bold; }}"

BASE_POINT_SIZE = 12  # the window's default font; big numbers set their own
