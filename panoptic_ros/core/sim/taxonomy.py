"""The simulated world's class taxonomy (also the default model's classes).

Category ids follow the panoptic id scheme of msg/PanopticSegmentation.msg: id 0 is void,
semantic channel k of a network is category k + 1.

| id | name  | kind  | made of (pybullet_data)             | occupancy          |
|----|-------|-------|-------------------------------------|--------------------|
| 1  | road  | stuff | flat strips, random colour/texture  | drivable ground    |
| 2  | grass | stuff | ground plane, random colour/texture | non-drivable ground|
| 3  | wall  | stuff | boxes standing on the ground        | obstacle           |
| 4  | sky   | stuff | the background (recoloured)         | ignored            |
| 5  | car   | thing | racecar/racecar.urdf x3.0-4.0       | obstacle           |
| 6  | robot | thing | husky/husky.urdf x0.9-1.3           | obstacle           |
| 7  | droid | thing | r2d2.urdf x0.8-1.2                  | obstacle           |
| 8  | duck  | thing | duck_vhacd.urdf x4-7                | obstacle           |
| 9  | teddy | thing | teddy_vhacd.urdf x6-10              | obstacle           |
| 10 | table | thing | table/table.urdf x0.8-1.2           | obstacle           |
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class SimClass:
    id: int
    name: str
    is_thing: bool
    color: tuple           # RGB for visualisation
    ground: str = ''       # 'drivable', 'non_drivable' or '' (not ground)
    urdf: str = ''         # things: model in pybullet_data
    scale: tuple = (1.0, 1.0)
    drop_to_ground: bool = True   # shift so the lowest collision point is at z = 0


CLASSES = (
    SimClass(1, 'road', False, (128, 64, 128), ground='drivable'),
    SimClass(2, 'grass', False, (107, 142, 35), ground='non_drivable'),
    SimClass(3, 'wall', False, (102, 102, 156)),
    SimClass(4, 'sky', False, (70, 130, 180)),
    SimClass(5, 'car', True, (0, 0, 142), urdf='racecar/racecar.urdf', scale=(3.0, 4.0)),
    SimClass(6, 'robot', True, (0, 60, 100), urdf='husky/husky.urdf', scale=(0.9, 1.3)),
    SimClass(7, 'droid', True, (220, 20, 60), urdf='r2d2.urdf', scale=(0.8, 1.2)),
    SimClass(8, 'duck', True, (250, 170, 30), urdf='duck_vhacd.urdf', scale=(4.0, 7.0)),
    SimClass(9, 'teddy', True, (119, 11, 32), urdf='teddy_vhacd.urdf', scale=(6.0, 10.0)),
    SimClass(10, 'table', True, (152, 251, 152), urdf='table/table.urdf', scale=(0.8, 1.2),
             drop_to_ground=False),  # its collision shape is only the top; legs stand at z = 0
)
BY_NAME = {c.name: c for c in CLASSES}
THINGS = tuple(c for c in CLASSES if c.is_thing)
LABEL_DIVISOR = 1000
VOID = 0


def class_colors():
    """RGB colour per category id, index 0 = void (black)."""
    return [(0, 0, 0)] + [c.color for c in CLASSES]


def coco_categories():
    """The `categories` list of a COCO panoptic annotation file."""
    return [{'id': c.id, 'name': c.name, 'isthing': int(c.is_thing), 'color': list(c.color),
             'supercategory': 'thing' if c.is_thing else 'stuff'} for c in CLASSES]


def default_model_config(**overrides):
    """The light model's configuration on the sim world's classes (core.model.ModelConfig)."""
    from panoptic_ros.core.model import ModelConfig   # the simulator needs no torch otherwise
    values = dict(classes=tuple(c.name for c in CLASSES),
                  is_thing=tuple(c.is_thing for c in CLASSES))
    values.update(overrides)
    return ModelConfig(**values)
