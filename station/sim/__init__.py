"""The simulated line: synthetic parts with defects, the conveyor, and its camera source.

``parts`` holds a part's pose, shape and sprite; ``defects`` the six defects; ``layers`` draws
a part on a pixel grid; ``render`` makes whole photos with exact masks; ``dataset`` writes them
in the MVTec AD layout; ``conveyor`` and ``source`` run the simulated line.
"""

from station.sim.dataset import write_mvtec_dataset
from station.sim.defects import DEFECT_TYPES
from station.sim.layers import render_sprite
from station.sim.parts import (  # the package's public names: import them from station.sim
    BELT_LEVEL,
    PartPose,
    PartSprite,
    draw_appearance,
    part_extent,
)
from station.sim.render import render_part

__all__ = [
    "BELT_LEVEL",
    "DEFECT_TYPES",
    "PartPose",
    "PartSprite",
    "draw_appearance",
    "part_extent",
    "render_part",
    "render_sprite",
    "write_mvtec_dataset",
]
