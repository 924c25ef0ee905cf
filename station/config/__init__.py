"""The recipe: one schema per section, TOML reading and writing with file:line errors, the engineer PIN."""
