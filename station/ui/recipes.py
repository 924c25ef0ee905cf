"""The product selector: product names (the file on hover), read again each time it opens,
so a recipe file added while the station runs shows up without a restart."""

from __future__ import annotations

import tomllib
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QSizePolicy, QWidget

from station.config import list_recipes


def product_name(path: Path) -> str:
    """``[product] name`` of a recipe file, read without checking the rest (the list must
    show a broken recipe too: choosing it says what is wrong)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        name = data.get("product", {}).get("name", "")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return f"{path.stem} (unreadable)"
    return str(name) if name else path.stem


def recipe_choices(current: Path) -> list[tuple[str, Path]]:
    """(shown name, resolved path) of the recipes beside ``current``; a product name two
    files share is followed by the file's name."""
    paths = [p.resolve() for p in list_recipes(current.parent)]
    if current.resolve() not in paths:
        paths.insert(0, current.resolve())
    names = [product_name(p) for p in paths]
    return [(n if names.count(n) == 1 else f"{n} ({p.name})", p)
            for n, p in zip(names, paths, strict=True)]


class RecipeBox(QComboBox):
    """A list of products that never takes the keyboard focus (Space belongs to Trigger)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.current: Path | None = None
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(10)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def fill(self, current: Path) -> None:
        """List the recipes beside ``current`` and select it (no signal)."""
        self.current = current
        self.blockSignals(True)
        self.clear()
        for i, (name, path) in enumerate(recipe_choices(current)):
            self.addItem(name, str(path))
            self.setItemData(i, path.name, Qt.ItemDataRole.ToolTipRole)
        self.setCurrentIndex(self.findData(str(current.resolve())))
        self.setToolTip(f"product recipe: {current.name} (engineer mode to switch)")
        self.blockSignals(False)

    def showPopup(self) -> None:  # noqa: N802 (Qt name)
        """Read the folder again as the list opens."""
        if self.current is not None:
            self.fill(self.current)
        super().showPopup()

    def path_at(self, index: int) -> Path:
        return Path(self.itemData(index))
