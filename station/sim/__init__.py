"""The simulated line: synthetic parts with defects, the conveyor, and its camera source."""

from station.sim.synthetic import (  # the package's public names: import them from station.sim
    BELT_LEVEL,
    DEFECT_TYPES,
    PartPose,
    PartSprite,
    draw_appearance,
    part_extent,
    render_part,
    render_sprite,
    write_mvtec_dataset,
)

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
