"""The simulated line: synthetic parts with defects, the conveyor, and its camera source."""
