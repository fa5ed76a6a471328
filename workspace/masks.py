"""Object masks: which pixels of an image belong to which named object.

A mask source answers ``objects(index)`` with ``{object name: (H, W) bool mask}`` at the
image's own resolution, for one split. The demo has exact ground truth; COCO-style
annotations and mask folders are read by the Grad-CAM diagnostics.
"""

from __future__ import annotations

import numpy as np


class LabelMapMasks:
    """Masks from per-image label maps: ``label_maps[i][y, x] = object id``.

    Args:
        label_maps: (N, H, W) uint8, 0 = background.
        names: ``names[i]`` maps object ids of image i to object names (ids missing from
            the mapping are ignored); a single dict applies to every image.
    """

    def __init__(self, label_maps: np.ndarray, names):
        self.label_maps = label_maps
        self.names = names

    def __len__(self) -> int:
        return len(self.label_maps)

    def object_names(self) -> list[str]:
        found: set[str] = set()
        maps = self.names if isinstance(self.names, list) else [self.names]
        for mapping in maps:
            found.update(mapping.values())
        return sorted(found)

    def objects(self, index: int) -> dict[str, np.ndarray]:
        mapping = self.names[index] if isinstance(self.names, list) else self.names
        label_map = self.label_maps[index]
        out = {}
        for object_id in np.unique(label_map):
            name = mapping.get(int(object_id))
            if name is not None:
                out[name] = label_map == object_id
        return out
