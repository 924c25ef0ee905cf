"""The operator GUI (PySide6 + pyqtgraph).

It only shows the engine's state and calls the engine's methods: :mod:`station.pipeline.engine` knows
no Qt, and everything here could be replaced without touching the line's behaviour.
"""
