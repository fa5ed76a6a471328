"""Object masks for the Grad-CAM associations: where they come from and how they are read.

A mask source answers ``objects(i) -> {object name: (H, W) bool}`` for image ``i`` of a
split (at the image's own resolution), ``object_names()`` and ``fingerprint()``.

Sources, in the order :func:`load_masks` tries them:

1. the workspace's own masks (``ws.masks(split)``; the demo's exact ground truth);
2. ``[data] masks = "instances.json"`` in ``workspace.toml``: **COCO-style instance
   annotations** (see :data:`MASKS_HELP`), one file for both splits;
3. ``[data] masks = "masks/"``: **a folder of per-image label-map PNGs** plus a label map
   JSON (see :data:`MASKS_HELP`).

4. ``[data] masks = "segmenter.json"`` holding ``{"segmentation_model": ...}``: a
   **torchvision segmentation model** run on the split with the user's own weights file
   (nothing is downloaded); its label maps are computed once and cached.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from workspace.errors import WorkspaceError

MASKS_HELP = """\
Add object masks with `masks = "..."` under `[data]` in workspace.toml (path relative to the file):

* **COCO instances JSON** (`masks = "instances.json"`): `{"images": [{"id", "file_name",
  "width", "height"}], "annotations": [{"image_id", "category_id", "segmentation", "bbox"}],
  "categories": [{"id", "name"}]}`. `segmentation` may be polygons (`[[x1, y1, x2, y2, ...]]`)
  or RLE (`{"size": [h, w], "counts": ...}`); without it the `bbox` `[x, y, w, h]` is used.
  `file_name` is matched to the split's image paths by the longest common path suffix
  (e.g. `cat/001.jpg` matches `.../train/cat/001.jpg`). Instances of one category are merged.
* **Mask folder** (`masks = "masks/"`): `masks/labels.json` = `{"1": "grass", "2": "sky"}`
  (pixel value -> object name; 0 and unlisted values are background) and one single-channel
  PNG label map per image, named like the image with `.png`, at
  `masks/<split>/<path inside the split folder>.png` (split = `train`/`eval` or the split
  folder's own name), `masks/<path inside the split folder>.png`, or `masks/<image name>.png`.

* **Segmentation model** (`masks = "segmenter.json"`): `{"segmentation_model":
  "deeplabv3_mobilenet_v3_large", "weights": "seg.pth", "labels": ["background", "person", ...],
  "resize": 520}`: a torchvision segmentation architecture (deeplabv3_*, fcn_*, lraspp_*), your
  weights file (path relative to the json; nothing is downloaded), one name per output channel
  ("background" and "" are ignored), optional input size and `mean`/`std`. The label maps are
  computed once per split and cached.

Images without annotations simply have no objects.
"""


def _rel_suffixes(path: str) -> list[str]:
    parts = Path(path).parts
    return ["/".join(parts[k:]) for k in range(len(parts))]  # longest first


def decode_rle(counts, height: int, width: int) -> np.ndarray:
    """COCO RLE (list of run lengths, or the compressed string) -> (H, W) bool."""
    if isinstance(counts, str):
        counts = _rle_from_string(counts)
    flat = np.zeros(height * width, dtype=bool)
    pos, value = 0, False
    for run in counts:
        if value:
            flat[pos:pos + run] = True
        pos += run
        value = not value
    return flat.reshape(width, height).T  # COCO RLE runs down columns


def _rle_from_string(s: str) -> list[int]:
    # pycocotools maskApi.c rleFrString: 5-bit groups, sign bit, delta from counts[-2]
    counts, p = [], 0
    while p < len(s):
        x, k, more = 0, 0, 1
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = c & 0x20
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rasterize_annotation(ann: dict, height: int, width: int) -> np.ndarray:
    """One COCO annotation -> (H, W) bool (polygons, RLE, else the bbox)."""
    seg = ann.get("segmentation")
    if isinstance(seg, dict) and "counts" in seg:
        h, w = seg.get("size", (height, width))
        mask = decode_rle(seg["counts"], int(h), int(w))
        if mask.shape != (height, width):
            mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))
        return mask
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if isinstance(seg, list) and seg:
        for poly in seg:
            if len(poly) >= 6:
                draw.polygon([(float(poly[j]), float(poly[j + 1])) for j in range(0, len(poly) - 1, 2)], fill=1)
    elif ann.get("bbox"):
        x, y, w, h = (float(v) for v in ann["bbox"])
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=1)
    return np.asarray(canvas, dtype=bool)


class CocoMasks:
    """Masks from a COCO-style instance annotation file, matched to one split's images."""

    def __init__(self, path: Path, split):
        self.path = Path(path)
        self.split = split
        try:
            doc = json.loads(self.path.read_text())
            categories = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
            images = doc["images"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WorkspaceError(f"{self.path.name} is not a COCO instances file "
                                 f"(needs images, annotations, categories): {exc}") from None
        self.categories = categories
        by_name = {str(img["file_name"]).replace("\\", "/").lstrip("./"): img for img in images}
        anns: dict[int, list[dict]] = {}
        for ann in doc.get("annotations", []):
            if int(ann.get("category_id", -1)) in categories:
                anns.setdefault(int(ann["image_id"]), []).append(ann)
        self._image = []  # per split position: the COCO image entry or None
        for sid in split.ids:
            self._image.append(next((by_name[s] for s in _rel_suffixes(sid) if s in by_name), None))
        self._anns = anns
        self.matched = sum(img is not None for img in self._image)

    def __len__(self) -> int:
        return len(self._image)

    def object_names(self) -> list[str]:
        return sorted(set(self.categories.values()))

    def objects(self, index: int) -> dict[str, np.ndarray]:
        img = self._image[index]
        if img is None:
            return {}
        if img.get("width") and img.get("height"):
            width, height = int(img["width"]), int(img["height"])
        else:
            width, height = self.split.load(index).size
        out: dict[str, np.ndarray] = {}
        for ann in self._anns.get(int(img["id"]), []):
            name = self.categories[int(ann["category_id"])]
            mask = rasterize_annotation(ann, height, width)
            out[name] = out[name] | mask if name in out else mask
        return out

    def fingerprint(self) -> str:
        st = self.path.stat()
        return _hash(str(self.path), st.st_size, st.st_mtime_ns, self.split.fingerprint())


class MaskFolder:
    """Masks from per-image label-map PNGs and ``labels.json`` (layout in :data:`MASKS_HELP`)."""

    LABEL_FILES = ("labels.json", "label_map.json")

    def __init__(self, folder: Path, split, *, split_name: str, split_root: Path):
        self.folder = Path(folder)
        self.split = split
        label_file = next((self.folder / n for n in self.LABEL_FILES if (self.folder / n).is_file()), None)
        if label_file is None:
            raise WorkspaceError(f"mask folder {self.folder} needs labels.json mapping pixel values "
                                 'to object names, e.g. {"1": "grass", "2": "sky"}')
        try:
            self.names = {int(k): str(v) for k, v in json.loads(label_file.read_text()).items() if int(k) != 0}
        except (ValueError, AttributeError) as exc:
            raise WorkspaceError(f"{label_file.name} must map integer pixel values to names: {exc}") from None
        pngs = {p.relative_to(self.folder).with_suffix("").as_posix(): p
                for p in self.folder.rglob("*.png")}
        root = Path(split_root)
        root = root.parent if root.is_file() else root
        self._files: list[Path | None] = []
        for sid in split.ids:
            path = Path(sid)
            try:
                rel = path.relative_to(root).with_suffix("").as_posix()
            except ValueError:
                rel = path.stem
            keys = [f"{split_name}/{rel}", f"{root.name}/{rel}", rel, path.stem]  # stem: masks/<name>.png
            self._files.append(next((pngs[k] for k in keys if k in pngs), None))
        self.matched = sum(f is not None for f in self._files)

    def __len__(self) -> int:
        return len(self._files)

    def object_names(self) -> list[str]:
        return sorted(set(self.names.values()))

    def objects(self, index: int) -> dict[str, np.ndarray]:
        path = self._files[index]
        if path is None:
            return {}
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "1"):
                raise WorkspaceError(f"mask {path.name} is {img.mode}; mask PNGs must be single-channel "
                                     "label maps (pixel value = object id)")
            label_map = np.asarray(img).astype(np.int64)
        out: dict[str, np.ndarray] = {}
        for value in np.unique(label_map):
            name = self.names.get(int(value))
            if name is not None:
                out[name] = out[name] | (label_map == value) if name in out else label_map == value
        return out

    def fingerprint(self) -> str:
        stats = [(str(f), f.stat().st_mtime_ns) if f else None for f in self._files]
        return _hash(json.dumps(stats), json.dumps(self.names), self.split.fingerprint())


def _is_segmenter_spec(path: Path) -> bool:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "segmentation_model" in doc


class SegmentationMasks:
    """Masks predicted by a torchvision segmentation model from the user's weights file.

    Call :meth:`prepare` (with a progress callback) to run the model over the split in
    batches; the (N, S, S) label maps are cached on disk keyed by the weights and the data.
    """

    IGNORED = ("", "background", "__background__")

    def __init__(self, spec_path: Path, split, *, cache_dir: Path, split_name: str = ""):
        from workspace.models import load_checkpoint

        self.spec_path, self.split = Path(spec_path), split
        self.cache_dir, self.split_name = Path(cache_dir), split_name
        doc = json.loads(self.spec_path.read_text())
        arch, labels = doc.get("segmentation_model"), doc.get("labels")
        if not isinstance(labels, list) or not labels:
            raise WorkspaceError(f"{self.spec_path.name} needs labels: one object name per output channel")
        if not doc.get("weights"):
            raise WorkspaceError(f"{self.spec_path.name} needs weights: the segmentation model's weights file "
                                 "(nothing is downloaded)")
        self.weights = (self.spec_path.parent / doc["weights"]).resolve()
        self.labels = [str(v) for v in labels]
        self.size = int(doc.get("resize", 520))
        self.mean = tuple(doc.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(doc.get("std", (0.229, 0.224, 0.225)))
        import torchvision
        from torchvision.models import segmentation

        from workspace.models import apply_state_dict

        valid = torchvision.models.list_models(module=segmentation)
        if arch not in valid:
            raise WorkspaceError(f"segmentation_model {arch!r} is not a torchvision segmentation model; "
                                 f"valid: {', '.join(valid)}")
        state = load_checkpoint(self.weights)
        extra = {"aux_loss": True} if any(k.startswith("aux_classifier.") for k in state) else {}
        self.model = torchvision.models.get_model(arch, weights=None, weights_backbone=None,
                                                  num_classes=len(self.labels), **extra)
        apply_state_dict(self.model, state, source=self.weights.name)
        self.model.eval()
        self._maps: np.ndarray | None = None
        self._sizes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.split)

    def object_names(self) -> list[str]:
        return sorted({n for n in self.labels if n.lower() not in self.IGNORED})

    def fingerprint(self) -> str:
        st = self.weights.stat()
        return _hash(self.spec_path.read_text(), st.st_size, st.st_mtime_ns, self.split.fingerprint())

    def prepare(self, progress=None, *, batch_size: int = 16) -> None:
        """Run the segmentation model over the split once (cached); ``progress(done, total)``."""
        if self._maps is not None:
            return
        path = self.cache_dir / f"{self.split_name}-{self.fingerprint()}.npz"
        if path.is_file():
            with np.load(path) as z:
                self._maps, self._sizes = z["maps"], z["sizes"]
            return
        n = len(self.split)
        maps = np.zeros((n, self.size, self.size), dtype=np.int16)
        sizes = np.zeros((n, 2), dtype=np.int64)
        mean, std = torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None]
        for start in range(0, n, batch_size):
            batch = []
            for i in range(start, min(start + batch_size, n)):
                img = self.split.load(i)
                sizes[i] = (img.height, img.width)
                x = TF.to_dtype(TF.to_image(img), torch.float32, scale=True)
                batch.append((TF.resize(x, [self.size, self.size], antialias=True) - mean) / std)
            with torch.no_grad():
                maps[start:start + len(batch)] = self.model(torch.stack(batch))["out"].argmax(1).numpy()
            if progress is not None:
                progress(start + len(batch), n)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, maps=maps, sizes=sizes)
        self._maps, self._sizes = maps, sizes

    def objects(self, index: int) -> dict[str, np.ndarray]:
        self.prepare()
        h, w = (int(v) for v in self._sizes[index])
        label_map = np.asarray(Image.fromarray(self._maps[index].astype(np.int32)).resize((w, h), Image.NEAREST))
        out: dict[str, np.ndarray] = {}
        for value in np.unique(label_map):
            name = self.labels[int(value)]
            if name.lower() not in self.IGNORED:
                out[name] = out[name] | (label_map == value) if name in out else label_map == value
        return out


def _hash(*parts) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def masks_fingerprint(source) -> str:
    """A hash of a mask source's content (sources without ``fingerprint()`` are hashed here)."""
    if hasattr(source, "fingerprint"):
        return source.fingerprint()
    h = hashlib.sha256()
    maps = getattr(source, "label_maps", None)
    if maps is not None:  # the demo's LabelMapMasks
        h.update(np.ascontiguousarray(maps).tobytes())
        h.update(json.dumps(source.names, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]
    return _hash(type(source).__name__, id(source))


def load_masks(ws, split: str):
    """The mask source of a workspace split, or None when the workspace has none.

    Raises:
        WorkspaceError: ``[data] masks`` names something that is neither a .json file
            nor a folder, or a malformed file.
    """
    source = ws.masks(split)
    if source is not None:
        return source
    path = getattr(ws.config.data, "masks", None)
    if not path:
        return None
    path = Path(path)
    data = ws.split(split)
    if path.is_file() and path.suffix.lower() == ".json":
        if _is_segmenter_spec(path):
            cache = Path(ws.state_dir) / "gradcam" / "segmasks"
            return SegmentationMasks(path, data, cache_dir=cache, split_name=split)
        return CocoMasks(path, data)
    if path.is_dir():
        split_root = getattr(ws.config.data, split)
        return MaskFolder(path, data, split_name=split, split_root=split_root)
    raise WorkspaceError(f"[data] masks = {path} is neither a COCO .json file nor a mask folder")


def mask_to_input(mask: np.ndarray, *, resize: int, crop: int | None = None) -> np.ndarray:
    """Apply the model transform's geometry (resize, centre crop) to a (H, W) bool mask.

    Mirrors :func:`workspace.data.build_transform`: ``Resize((r, r))`` without a crop,
    ``Resize(r)`` (shorter side) then ``CenterCrop(c)`` with one. Nearest neighbour.
    """
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None]
    size = [resize] if crop else [resize, resize]
    if tuple(t.shape[-2:]) != ((resize, resize) if not crop else None):
        t = TF.resize(t, size, interpolation=InterpolationMode.NEAREST)
    if crop:
        t = TF.center_crop(t, [crop, crop])
    return t[0].numpy().astype(bool)


def image_to_input(img: Image.Image, *, resize: int, crop: int | None = None) -> np.ndarray:
    """The image as the model sees it, before normalisation: (H, W, 3) uint8."""
    size = [resize] if crop else [resize, resize]
    img = TF.resize(img, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    if crop:
        img = TF.center_crop(img, [crop, crop])
    return np.asarray(img.convert("RGB"))
