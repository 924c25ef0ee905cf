"""Pushing the part off: the reject scheduler (time or count, fail-safe) and the serial link."""
