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
import math
import os
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

Images without annotations simply have no objects. Annotations that cannot be drawn
(a non-numeric bbox, a polygon of fewer than 3 points, an RLE that does not fit its image,
an undeclared category or unknown image) are skipped and listed.
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


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_whole(v, *, positive: bool = False) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and (v > 0 if positive else v >= 0)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _coco_tables(doc, name: str) -> tuple[dict[int, str], dict[int, dict], list]:
    """Categories, images by id and the raw annotation list of a COCO document.

    Raises:
        WorkspaceError: the document is not COCO-shaped (not an object, a table that is
            not a list, a category or image entry without its required fields).
    """
    def bad(message: str) -> WorkspaceError:
        return WorkspaceError(f"{name} is not a COCO instances file: {message}")

    if not isinstance(doc, dict):
        raise bad(f"the top level must be an object with images, annotations, categories, got {type(doc).__name__}")
    for table in ("images", "categories"):
        if table not in doc:
            raise bad(f"no '{table}' list (needs images, annotations, categories)")
    for table in ("images", "annotations", "categories"):
        if table in doc and not isinstance(doc[table], list):
            raise bad(f"'{table}' must be a list, got {type(doc[table]).__name__}")
    categories: dict[int, str] = {}
    for i, cat in enumerate(doc["categories"]):
        if not isinstance(cat, dict) or not _is_whole(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise bad(f"categories[{i}] needs an integer id and a text name, got {_short(cat)}")
        categories[cat["id"]] = cat["name"]
    images: dict[int, dict] = {}
    for i, img in enumerate(doc["images"]):
        if not isinstance(img, dict) or not _is_whole(img.get("id")):
            raise bad(f"images[{i}] needs an integer id, got {_short(img)}")
        if not isinstance(img.get("file_name"), str) or not img["file_name"].strip():
            raise bad(f"images[{i}] (id {img['id']}) needs a file_name")
        for side in ("width", "height"):
            if side in img and not _is_whole(img[side], positive=True):
                raise bad(f"images[{i}] (id {img['id']}) {side} must be a positive whole number, "
                          f"got {_short(img[side])}")
        if img["id"] in images:
            raise bad(f"images[{i}] repeats image id {img['id']}")
        images[img["id"]] = img
    return categories, images, doc.get("annotations", [])


def _rle_problem(seg: dict, img: dict) -> str | None:
    size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_whole(v, positive=True) for v in size)):
        return f"RLE size must be [height, width], got {_short(size)}"
    h, w = size
    if "width" in img and "height" in img and (h, w) != (img["height"], img["width"]):
        return f"RLE size {size} does not match the image's {img['height']}x{img['width']}"
    if isinstance(counts, str):
        try:
            counts = _rle_from_string(counts)
        except (IndexError, ValueError):
            return "RLE counts string is truncated"
    elif not isinstance(counts, list) or not all(_is_whole(v) for v in counts):
        return f"RLE counts must be non-negative whole numbers or a compressed string, got {_short(counts)}"
    if any(c < 0 for c in counts):
        return "RLE counts hold a negative run length"
    if sum(counts) != h * w:
        return f"RLE runs cover {sum(counts)} pixels, not {h}x{w} = {h * w}"
    return None


def _three_numbers(value, *, positive: bool = False) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 3 and all(map(_is_number, value))
            and (not positive or min(value) > 0))


def _annotation_problem(ann, categories: dict, images: dict) -> str | None:
    """Why a COCO annotation cannot be drawn, or None when it is valid."""
    if not isinstance(ann, dict):
        return f"not an object: {_short(ann)}"
    if "image_id" not in ann:
        return "no image_id"
    img = images.get(ann["image_id"]) if _is_whole(ann["image_id"]) else None
    if img is None:
        return f"image_id {_short(ann['image_id'])} is not among the images"
    if ann.get("category_id") not in categories or isinstance(ann.get("category_id"), bool):
        return f"category_id {_short(ann.get('category_id'))} is not declared in categories"
    bbox = ann.get("bbox")
    if bbox is not None and not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))
                                 and bbox[2] >= 0 and bbox[3] >= 0):
        return f"bbox must be 4 numbers [x, y, width >= 0, height >= 0], got {_short(bbox)}"
    seg = ann.get("segmentation")
    if seg is None or seg == []:
        return None if bbox is not None else "no segmentation and no bbox"
    if isinstance(seg, dict):
        return _rle_problem(seg, img)
    if not isinstance(seg, list):
        return f"segmentation must be polygons (lists of numbers) or an RLE object, got {_short(seg)}"
    for poly in seg:
        if not isinstance(poly, list) or not all(map(_is_number, poly)):
            return f"polygon must be a list of numbers, got {_short(poly)}"
        if len(poly) < 6 or len(poly) % 2:
            return f"polygon needs an even count of at least 6 numbers (3 points), got {len(poly)}"
    return None


class CocoMasks:
    """Masks from a COCO-style instance annotation file, matched to one split's images.

    The file is validated once: a document that is not COCO-shaped raises; each bad
    annotation (non-numeric bbox, polygons that are not lists of >= 6 numbers, an RLE
    whose size or run lengths do not fit its image, an undeclared category, a missing or
    unknown ``image_id``) is skipped and described in :attr:`problems`, summarised in
    :attr:`warnings` so the page and the CLI can say why some objects are missing.

    Attributes:
        problems: one line per skipped annotation, ``annotations[i] (id N): reason``.
        warnings: at most one line summarising ``problems`` (count and the first few).
        matched: how many of the split's images have an entry in the file.
    """

    def __init__(self, path: Path, split):
        self.path = Path(path)
        self.split = split
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WorkspaceError(f"{self.path.name} is not a COCO instances file "
                                 f"(needs images, annotations, categories): {exc}") from None
        categories, images, annotations = _coco_tables(doc, self.path.name)
        self.categories = categories
        by_name = {img["file_name"].replace("\\", "/").lstrip("./"): img for img in images.values()}
        anns: dict[int, list[dict]] = {}
        self.problems: list[str] = []
        for i, ann in enumerate(annotations):
            problem = _annotation_problem(ann, categories, images)
            if problem is None:
                anns.setdefault(ann["image_id"], []).append(ann)
            else:
                ann_id = ann.get("id") if isinstance(ann, dict) else None
                self.problems.append(f"annotations[{i}]{f' (id {ann_id})' if ann_id is not None else ''}: {problem}")
        self.warnings: list[str] = []
        if self.problems:
            self.warnings.append(f"{self.path.name}: {len(self.problems)} of {len(annotations)} annotations "
                                 f"skipped: {'; '.join(self.problems[:3])}{'; ...' if len(self.problems) > 3 else ''}")
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
            width, height = img["width"], img["height"]
        else:
            width, height = self.split.load(index).size
        out: dict[str, np.ndarray] = {}
        for ann in self._anns.get(img["id"], []):
            name = self.categories[ann["category_id"]]
            mask = rasterize_annotation(ann, height, width)
            out[name] = out[name] | mask if name in out else mask
        return out

    def fingerprint(self) -> str:
        st = self.path.stat()
        return _hash(str(self.path), st.st_size, st.st_mtime_ns, self.split.fingerprint())


class MaskFolder:
    """Masks from per-image label-map PNGs and ``labels.json`` (layout in :data:`MASKS_HELP`)."""

    LABEL_FILES = ("labels.json", "label_map.json")

    def __init__(self, folder: Path, split, *, split_name: str, split_root: Path, confine_to: Path | None = None):
        """
        Args:
            folder: the mask folder.
            split: the image split the masks belong to.
            split_name: "train"/"eval", one of the layouts' folder names.
            split_root: the split's folder (or CSV file), for paths inside the split.
            confine_to: every mask PNG (symlinks followed) must lie inside this folder;
                None allows any location.

        Raises:
            WorkspaceError: no or malformed labels.json, a mask symlinked outside ``confine_to``.
        """
        self.folder = Path(folder)
        self.split = split
        label_file = next((self.folder / n for n in self.LABEL_FILES if (self.folder / n).is_file()), None)
        if label_file is None:
            raise WorkspaceError(f"mask folder {self.folder} needs labels.json mapping pixel values "
                                 'to object names, e.g. {"1": "grass", "2": "sky"}')
        try:
            self.names = {int(k): str(v) for k, v in json.loads(label_file.read_text(encoding="utf-8")).items()
                          if int(k) != 0}
        except (OSError, ValueError, AttributeError) as exc:
            raise WorkspaceError(f"{label_file.name} must map integer pixel values to names: {exc}") from None
        pngs = {p.relative_to(self.folder).with_suffix("").as_posix(): p
                for p in self.folder.rglob("*.png")}
        if confine_to is not None:
            real_root = os.path.realpath(confine_to)
            for p in pngs.values():
                real = os.path.realpath(p)
                if p.is_symlink() and not (real + os.sep).startswith(real_root.rstrip(os.sep) + os.sep):
                    raise WorkspaceError(f"mask {p} is a symlink to {real}, outside the workspace folder "
                                         f"{confine_to}; move it inside or set allow_outside = true in workspace.toml")
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
        doc = json.loads(self.spec_path.read_text(encoding="utf-8"))
        arch, labels = doc.get("segmentation_model"), doc.get("labels")
        for key, ok, want in (("resize", _is_whole(doc.get("resize", 520), positive=True), "a positive whole number"),
                              ("mean", _three_numbers(doc.get("mean", (0, 0, 0))), "3 numbers"),
                              ("std", _three_numbers(doc.get("std", (1, 1, 1)), positive=True), "3 numbers > 0"),
                              ("weights", isinstance(doc.get("weights", ""), str), "a path in quotes")):
            if not ok:
                raise WorkspaceError(f"{self.spec_path.name}: {key} must be {want}, got {_short(doc.get(key))}")
        if not isinstance(labels, list) or not labels or not all(isinstance(v, str) for v in labels):
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
        return MaskFolder(path, data, split_name=split, split_root=split_root,
                          confine_to=getattr(ws.config.data, "confine_to", None))
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
