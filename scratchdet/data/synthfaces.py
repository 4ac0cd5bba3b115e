"""SynthFaces: procedurally drawn face scenes, identical on every machine.

Each image is a pure function of ``(seed, split, index, image_size)``: its
random numbers come from ``numpy.random.default_rng([seed, split_id, index])``
and it is drawn with OpenCV primitives, so there is nothing to download and
random access needs no state. Splits are disjoint by construction (different
``split_id`` in the seed). Scenes (``SCENE_TYPES``, with ``SCENE_WEIGHTS``):

* ``"portrait"``: one face of 33-72% of the image side, sometimes cut by the border;
* ``"group"``: 2-7 people in one or two rows, 8-30% of the side;
* ``"crowd"``: rows of small faces in perspective (about 10 to 90, from 7 px at 256 px);
* ``"mixed"``: one to three large faces in front of a band of small ones;
* ``"empty"``: no face, only background and face-like distractors.

Faces have varied skin tones, hair styles and colours, eyes (sometimes closed),
eyebrows, nose, mouth, sometimes glasses, sunglasses, a beard or a hat; they
are rotated in plane (up to +-25 degrees), may be hidden by other people,
hands, boards, poles or leaves, and the whole image gets blur, uneven light,
colour casts, noise and JPEG artefacts at random. Distractors (skin ovals with
scrambled features, smileys, clocks, balls, buttons, backs of heads) are never
labelled. Face sizes scale with ``image_size`` (a 480 px image is a 256 px one
drawn finer).

Labels. The face box is the axis-aligned xyxy pixel box of the rotated face
oval: hairline (top of the oval, under any bangs) to chin, cheek to cheek,
ears excluded, clipped to the image, like WIDER FACE. A drawn face is labelled
iff at least ``MIN_IN_FRAME`` (50%) of its box area lies inside the image and
at least ``MIN_VISIBLE`` (30%) of its in-image oval pixels are still visible
after everything drawn later (faces, bodies, hair and occluders in front);
the others stay in the picture unlabelled and are counted in
``SceneMeta.num_unlabelled``.

Taught in ``notebooks/02_data.ipynb``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scratchdet.data import _draw
from scratchdet.data.cache import resolve_data_root

GENERATOR_VERSION = 1
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
SPLIT_SIZES = {"train": 4000, "val": 500, "test": 500}
SCENE_TYPES = ("portrait", "group", "crowd", "mixed", "empty")
SCENE_WEIGHTS = (0.2, 0.3, 0.18, 0.24, 0.08)
MIN_IN_FRAME = 0.5
MIN_VISIBLE = 0.3
MAX_FACES = 100  # drawn per image at most (the owner map is uint8)
MIN_FACE_SIZE = 0.028  # smallest face drawn, fraction of the image side (7 px at 256)
MAX_ANGLE = 25.0  # in-plane rotation limit, degrees
SIZE_BINS = (0, 8, 16, 24, 32, 48, 64, 96, 128, float("inf"))

__all__ = [
    "GENERATOR_VERSION", "SPLIT_IDS", "SPLIT_SIZES", "SCENE_TYPES", "SIZE_BINS",
    "SceneMeta", "SynthSample", "generate_sample", "generate_image", "SynthFaces",
    "dataset_statistics",
]


@dataclass(frozen=True)
class SceneMeta:
    """What one SynthFaces image contains.

    Attributes:
        scene: one of ``SCENE_TYPES``.
        num_faces: labelled faces (rows of the boxes array).
        num_unlabelled: faces drawn but not labelled (mostly outside or hidden).
        num_distractors: face-like non-faces drawn.
        num_occluders: hands, boards, poles and leaves drawn over the scene.
    """

    scene: str
    num_faces: int
    num_unlabelled: int
    num_distractors: int
    num_occluders: int


@dataclass(frozen=True)
class SynthSample:
    """One generated image: ``image`` uint8 (H, W, 3) RGB, ``boxes`` float32 (M, 4) xyxy px."""

    image: np.ndarray
    boxes: np.ndarray
    meta: SceneMeta


def _check_int(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _check_split(split) -> int:
    if not isinstance(split, str) or split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
    return SPLIT_IDS[split]


# ---------------------------------------------------------------- scene layout
# Each layout returns face centres and sizes (sqrt(w * h) of the box, px).


def _layout_portrait(rng, s: int):
    size = s * rng.uniform(0.33, 0.72)
    cx, cy = s * rng.uniform(0.3, 0.7), s * rng.uniform(0.32, 0.6)
    if rng.random() < 0.2:  # cut by the border, sometimes too much to label
        cx += (1 if rng.random() < 0.5 else -1) * size * rng.uniform(0.3, 0.8)
    return np.array([cx]), np.array([cy]), np.array([size])


def _layout_group(rng, s: int):
    n = int(rng.integers(2, 8))
    rows = 1 if n <= 4 else 2
    per_row = -(-n // rows)
    base = min(s * rng.uniform(0.08, 0.3), 1.05 * s / (per_row * 1.25))
    col = np.arange(n) % per_row
    row = np.arange(n) // per_row
    cx = s / 2 + (col - (per_row - 1) / 2) * base * rng.uniform(1.1, 1.5) + rng.normal(0, 0.1 * base, n)
    cy = s * rng.uniform(0.25, 0.55) + row * base * 1.2 + rng.normal(0, 0.12 * base, n)
    return cx, cy, base * (1 + 0.25 * row) * rng.uniform(0.85, 1.15, n)


def _layout_crowd(rng, s: int, top: float = 0.0, bottom: float = 1.0):
    """Rows of people between ``top`` and ``bottom`` (fractions of the side), far ones smaller."""
    far = s * rng.uniform(0.03, 0.055)
    near = far * rng.uniform(1.3, 3.0)
    density, gap = rng.uniform(0.25, 0.85), rng.uniform(1.25, 2.5)
    cx, cy, size = [], [], []
    y = s * (top + rng.uniform(0.02, 0.3) * (bottom - top))
    while y < s * bottom:
        row = far + (near - far) * (y / s - top) / max(bottom - top, 1e-6)
        xs = np.arange(rng.uniform(0, row), s, row * gap * rng.uniform(0.9, 1.1))
        xs = xs[rng.random(len(xs)) < density] + rng.normal(0, 0.2 * row, 1)
        cx.append(xs)
        cy.append(y + rng.normal(0, 0.15 * row, len(xs)))
        size.append(row * rng.uniform(0.85, 1.15, len(xs)))
        y += row * rng.uniform(1.1, 1.8)
    return np.concatenate(cx), np.concatenate(cy), np.concatenate(size)


def _layout_mixed(rng, s: int):
    bx, by, bs = _layout_crowd(rng, s, top=rng.uniform(0, 0.2), bottom=rng.uniform(0.3, 0.55))
    n = int(rng.integers(1, 4))
    size = s * rng.uniform(0.14, 0.38, n)
    cx = s * (np.arange(n) + rng.uniform(0.2, 0.8, n)) / n
    cy = s * rng.uniform(0.45, 0.75, n)
    return np.concatenate([bx, cx]), np.concatenate([by, cy]), np.concatenate([bs, size])


_LAYOUTS = {"portrait": _layout_portrait, "group": _layout_group, "crowd": _layout_crowd,
            "mixed": _layout_mixed, "empty": lambda rng, s: (np.zeros(0),) * 3}


_STYLE_CDF = np.cumsum([0.06, 0.3, 0.2, 0.14, 0.18, 0.12])  # over _draw.HAIR_STYLES
_HAIR = np.array(_draw.HAIR, np.float64)


def _sample_faces(rng, cx: np.ndarray, cy: np.ndarray, size: np.ndarray, crowd: bool) -> list:
    """One :class:`_draw.Face` per centre and size (sqrt(w * h) of its box, px)."""
    u = rng.random((len(size), 36))  # one draw for all the faces' random choices
    aspect = 1.18 + 0.2 * u[:, 0]  # b / a
    a = size / (2 * np.sqrt(aspect))
    spread = (6 if crowd else 11) * 2  # degrees; a sum of 3 uniforms is nearly normal
    angle = np.clip((u[:, 1] + u[:, 2] + u[:, 3] - 1.5) * spread, -MAX_ANGLE, MAX_ANGLE)
    yaw = (u[:, 4] + u[:, 5] - 1) * 0.8
    style = np.searchsorted(_STYLE_CDF, u[:, 6] * _STYLE_CDF[-1])
    hair = _HAIR[(u[:, 7] * len(_HAIR)).astype(int)]
    columns = (cx, cy, a, a * aspect, angle, yaw, hair, style, u)
    return [_draw.Face(x, y, ai, bi, ang, yw, _draw.skin_tone(k[8], k[9:12]), tuple(h), st, k[12:36])
            for x, y, ai, bi, ang, yw, h, st, k in zip(*(c.tolist() for c in columns))]


def _pick(rng, weights) -> int:
    """Index drawn with probabilities ``weights`` (cheaper than ``rng.choice``)."""
    return int(np.searchsorted(np.cumsum(weights), rng.random() * sum(weights), side="right"))


def _labels(faces: list, drawn: np.ndarray, visible: np.ndarray, s: int) -> tuple[np.ndarray, int]:
    """Clipped xyxy boxes of the faces that pass the labelling rule, and how many fail."""
    boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
    clipped = np.clip(boxes, 0, s)
    wh, full_wh = clipped[:, 2:] - clipped[:, :2], boxes[:, 2:] - boxes[:, :2]
    in_frame = wh.prod(1) / np.maximum(full_wh.prod(1), 1e-9)
    seen = visible / np.maximum(drawn, 1)
    keep = (in_frame >= MIN_IN_FRAME) & (seen >= MIN_VISIBLE) & (drawn > 0) & (wh >= 1).all(1)
    return clipped[keep].astype(np.float32), int((~keep).sum())


def _draw_people(img: np.ndarray, rng, scene: str, s: int) -> tuple[list, np.ndarray, np.ndarray]:
    """Lay out and draw the faces, far (small) ones first.

    Returns the faces, each face's in-image oval pixel count when drawn, and
    the owner map ``uint8 (H, W)`` (face id + 1 per pixel, 0 for none).
    """
    cx, cy, size = _LAYOUTS[scene](rng, s)
    keep = np.flatnonzero(size >= MIN_FACE_SIZE * s)[:MAX_FACES]
    keep = keep[np.argsort(size[keep], kind="stable")]
    faces = _sample_faces(rng, cx[keep], cy[keep], size[keep], crowd=scene == "crowd")
    owner = np.zeros((s, s), np.uint8)
    drawn = np.array([_draw.draw_face(img, owner, k + 1, f, body=f.look[2] < 0.8)
                      for k, f in enumerate(faces)], np.int64)
    return faces, drawn, owner


def _draw_occluders(img: np.ndarray, owner: np.ndarray, rng, faces: list, s: int) -> int:
    """Hands, boards, poles, leaves: each aimed at a face (hiding it partly) or anywhere."""
    count = int(rng.integers(1, 4)) if rng.random() < 0.3 else 0
    for _ in range(count):
        if faces:
            f = faces[int(rng.random() * len(faces))]
            centre = np.array([f.cx, f.cy]) + rng.normal(0, 1.1, 2) * [f.a, f.b]
            _draw.draw_occluder(img, owner, rng, *centre, f.a * rng.uniform(0.5, 1.3))
        else:
            _draw.draw_occluder(img, owner, rng, *rng.uniform(0, s, 2), s * rng.uniform(0.05, 0.2))
    return count


def _render(rng: np.random.Generator, s: int) -> SynthSample:
    scene = SCENE_TYPES[_pick(rng, SCENE_WEIGHTS)]
    img = _draw.background(rng, s)
    count = int(rng.integers(2, 8)) if scene == "empty" else _pick(rng, (0.35, 0.3, 0.2, 0.1, 0.05))
    in_front = rng.random(count) < 0.4  # distractors drawn after the people may hide them
    radii = s * np.exp(rng.uniform(np.log(0.015), np.log(0.2), count))
    for r in radii[~in_front]:
        _draw.draw_distractor(img, rng, *rng.uniform(0, s, 2), r)
    faces, drawn, owner = _draw_people(img, rng, scene, s)
    for r in radii[in_front]:
        _draw.draw_distractor(img, rng, *rng.uniform(0, s, 2), r, owner)
    num_occluders = _draw_occluders(img, owner, rng, faces, s)
    visible = np.bincount(owner.ravel(), minlength=len(faces) + 1)[1:]
    img = _draw.apply_effects(img, rng)
    boxes, num_unlabelled = _labels(faces, drawn, visible, s)
    return SynthSample(img, boxes, SceneMeta(scene, len(boxes), num_unlabelled, count, num_occluders))


def generate_sample(seed: int, split: str, index: int, image_size: int = 256) -> SynthSample:
    """Generate one SynthFaces image with its labels and scene description.

    Args:
        seed: dataset seed, an int >= 0.
        split: ``"train"``, ``"val"`` or ``"test"``.
        index: image number, an int >= 0 (any, not only below ``SPLIT_SIZES``).
        image_size: side of the square image in pixels, 32 to 4096.

    Returns:
        A :class:`SynthSample`: ``image`` ``uint8 (H, W, 3)`` RGB, ``boxes``
        ``float32 (M, 4)`` xyxy pixels inside the image (M may be 0), ``meta``.
        The same arguments give the same bytes on every run.
    """
    split_id = _check_split(split)
    seed, index = _check_int(seed, "seed", 0), _check_int(index, "index", 0)
    image_size = _check_int(image_size, "image_size", 32, 4096)
    return _render(np.random.default_rng([seed, split_id, index]), image_size)


def generate_image(seed: int, split: str, index: int,
                   image_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8 (H, W, 3) RGB, boxes float32 (M, 4) xyxy px)``; see :func:`generate_sample`."""
    sample = generate_sample(seed, split, index, image_size)
    return sample.image, sample.boxes


# ---------------------------------------------------------------- the dataset


class SynthFaces:
    """One split of SynthFaces as a source: ``ds[i] -> (image, boxes)``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: side of the square images in pixels (32 to 4096).
        num_images: images in the split; default ``SPLIT_SIZES[split]``
            (train 4000, val 500, test 500).
        seed: dataset seed (int >= 0); the splits of one seed never share an image.
        root: data folder; the cache lives in ``root/synthfaces/<key>/``
            (``None``: :func:`scratchdet.data.cache.default_data_root`).
        cache: build the cache on first use (``images.npy`` memory map of
            ``uint8 (N, H, W, 3)`` plus ``labels.npz``) and read from it;
            ``False`` draws every image on the fly (same bytes either way).
        progress: show a tqdm bar while building; default: only on a terminal.

    ``ds[i]`` returns ``image`` ``uint8 (H, W, 3)`` RGB and ``boxes``
    ``float32 (M, 4)`` xyxy pixels (M may be 0); :meth:`meta` says what the
    image shows and :meth:`boxes` gives the labels alone.
    """

    def __init__(self, split: str = "train", image_size: int = 256, num_images: int | None = None,
                 seed: int = 0, root: str | os.PathLike | None = None, cache: bool = True,
                 progress: bool | None = None) -> None:
        self.split, self.split_id = split, _check_split(split)
        self.image_size = _check_int(image_size, "image_size", 32, 4096)
        self.num_images = (SPLIT_SIZES[split] if num_images is None
                           else _check_int(num_images, "num_images", 1))
        self.seed = _check_int(seed, "seed", 0)
        self.cache_dir = resolve_data_root(root) / "synthfaces" / self.key if cache else None
        self._images = None  # memory map, opened lazily (and again after pickling)
        self._labels = None
        self._cached = self.num_images  # images in the cache folder (a larger one may serve)
        if self.cache_dir is not None:
            if not self.cache_dir.is_dir():
                larger = _larger_cache(self)
                if larger is None:
                    _build_cache(self, self.cache_dir, progress)
                else:  # the first images of a bigger cache of this split are these images
                    self.cache_dir, self._cached = larger
            self._labels = _read_labels(self.cache_dir, self._cached)

    @property
    def key(self) -> str:
        """Cache folder name: generator version and code hash, seed, split, size and count.

        The hash of the generator's source makes an edited generator build a
        new cache even if ``GENERATOR_VERSION`` was not bumped.
        """
        return (f"v{GENERATOR_VERSION}-{_generator_hash()}-seed{self.seed}-{self.split}-"
                f"{self.image_size}px-n{self.num_images}")

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        where = f"cache={str(self.cache_dir)!r}" if self.cache_dir else "cache=None"
        return (f"SynthFaces(split={self.split!r}, image_size={self.image_size}, "
                f"num_images={self.num_images}, seed={self.seed}, {where})")

    def _index(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"SynthFaces index must be an int, got {type(i).__name__} {i!r}")
        if not -self.num_images <= i < self.num_images:
            raise IndexError(f"index {i} is out of range for SynthFaces {self.split!r} "
                             f"with {self.num_images} images")
        return int(i) % self.num_images

    def sample(self, i: int) -> SynthSample:
        """Image ``i`` with its boxes and :class:`SceneMeta`."""
        i = self._index(i)
        if self._labels is None:
            return generate_sample(self.seed, self.split, i, self.image_size)
        if self._images is None:
            self._images = _open_images(self.cache_dir, self._cached, self.image_size)
        return SynthSample(np.array(self._images[i]), self.boxes(i), self.meta(i))

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint8 (H, W, 3) RGB, boxes float32 (M, 4) xyxy px)`` of image ``i``."""
        sample = self.sample(i)
        return sample.image, sample.boxes

    def boxes(self, i: int) -> np.ndarray:
        """``float32 (M, 4)`` xyxy pixel boxes of image ``i`` (cheap with the cache)."""
        i = self._index(i)
        if self._labels is None:
            return self.sample(i).boxes
        start, stop = self._labels["offsets"][i: i + 2]
        return self._labels["boxes"][start:stop].copy()

    def meta(self, i: int) -> SceneMeta:
        """The :class:`SceneMeta` of image ``i``."""
        i = self._index(i)
        if self._labels is None:
            return self.sample(i).meta
        lab = self._labels
        counts = (int(lab[k][i]) for k in ("num_unlabelled", "num_distractors", "num_occluders"))
        return SceneMeta(SCENE_TYPES[lab["scene"][i]], int(lab["offsets"][i + 1] - lab["offsets"][i]), *counts)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_images"] = None  # a memory map would pickle as a full copy
        return state


@functools.lru_cache(maxsize=1)
def _generator_hash() -> str:
    """First 8 hex digits of the sha256 of this module's and ``_draw``'s source."""
    digest = hashlib.sha256()
    for path in (Path(__file__), Path(_draw.__file__)):
        digest.update(path.read_bytes().replace(b"\r\n", b"\n"))
    return digest.hexdigest()[:8]


def _larger_cache(ds: SynthFaces) -> tuple[Path, int] | None:
    """The smallest complete cache of the same split, seed and size holding more images, if any.

    Image ``i`` depends only on ``(seed, split, i, image_size)``, so its first
    ``num_images`` images are exactly the ones asked for (``val_size=200``
    reads the 500-image val cache instead of drawing a new one).
    """
    prefix = ds.key[: ds.key.rindex("-n") + 2]
    found = []
    for folder in ds.cache_dir.parent.glob(f"{prefix}*"):
        count = folder.name[len(prefix):]
        if count.isdigit() and int(count) > ds.num_images and (folder / "info.json").is_file():
            found.append((int(count), folder))
    return (min(found)[1], min(found)[0]) if found else None


def _build_cache(ds: SynthFaces, final: Path, progress: bool | None) -> None:
    """Draw every image into a temporary folder, then rename it to ``final`` atomically.

    Two processes building the same cache both finish; the first rename wins
    and the other discards its copy.
    """
    from tqdm import tqdm

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        n, s = ds.num_images, ds.image_size
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, s, s, 3))
        boxes, metas = [], []
        show = sys.stderr.isatty() if progress is None else progress
        for i in tqdm(range(n), desc=f"SynthFaces {ds.split} {s}px", disable=not show, leave=False):
            sample = generate_sample(ds.seed, ds.split, i, s)
            images[i] = sample.image
            boxes.append(sample.boxes)
            metas.append(sample.meta)
        images.flush()
        del images
        _write_labels(tmp / "labels.npz", boxes, metas)
        (tmp / "info.json").write_text(json.dumps({"generator_version": GENERATOR_VERSION, "key": ds.key}))
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_labels(path: Path, boxes: list, metas: list) -> None:
    offsets = np.cumsum([0] + [len(b) for b in boxes]).astype(np.int64)
    flat = np.concatenate(boxes).astype(np.float32).reshape(-1, 4)  # (total faces, 4)
    np.savez(path, boxes=flat, offsets=offsets,
             scene=np.array([SCENE_TYPES.index(m.scene) for m in metas], np.int8),
             **{k: np.array([getattr(m, k) for m in metas], np.int32)
                for k in ("num_unlabelled", "num_distractors", "num_occluders")})


def _read_labels(folder: Path, n: int) -> dict:
    try:
        with np.load(folder / "labels.npz") as f:
            labels = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"SynthFaces cache {folder} is unreadable ({err}); "
                         "delete the folder to rebuild it") from err
    offsets = labels.get("offsets")
    if offsets is None or len(offsets) != n + 1 or offsets[-1] != len(labels["boxes"]):
        raise ValueError(f"SynthFaces cache {folder}/labels.npz does not hold {n} images; "
                         "delete the folder to rebuild it")
    return labels


def _open_images(folder: Path, n: int, size: int) -> np.ndarray:
    images = np.load(folder / "images.npy", mmap_mode="r")
    if images.shape != (n, size, size, 3) or images.dtype != np.uint8:
        raise ValueError(f"SynthFaces cache {folder}/images.npy has shape {images.shape} {images.dtype}, "
                         f"expected ({n}, {size}, {size}, 3) uint8; delete the folder to rebuild it")
    return images


# ---------------------------------------------------------------- statistics


def _histogram(values: np.ndarray, edges) -> dict:
    idx = np.searchsorted(np.asarray(edges, np.float64), values, side="right") - 1
    counts = np.bincount(idx, minlength=len(edges) - 1)[: len(edges) - 1]
    labels = [f"{lo:g}-{hi:g}" if np.isfinite(hi) else f"{lo:g}+" for lo, hi in zip(edges[:-1], edges[1:])]
    return dict(zip(labels, counts.tolist()))


def dataset_statistics(source, size_bins=SIZE_BINS, max_images: int | None = None) -> dict:
    """Faces per image and face sizes of any source of ``(image, boxes)`` pairs.

    Args:
        source: ``len(source)`` and ``source[i] -> (image, boxes float (M, 4) xyxy px)``;
            a ``source.boxes(i)`` method, where present (SynthFaces), is used
            instead so that no image is read.
        size_bins: increasing edges of the face size histogram, px (last may be inf).
        max_images: look at the first ``max_images`` images only.

    Returns:
        A JSON-ready dict: ``num_images``, ``num_faces``, ``empty_fraction``,
        ``faces_per_image`` (mean, max, histogram), ``face_size_px`` with face
        size ``sqrt(w * h)`` (min, median, max, histogram over ``size_bins``),
        ``faces_under_16px`` and, for sources with ``meta(i)``, ``scenes``.
    """
    n = len(source) if max_images is None else min(len(source), _check_int(max_images, "max_images", 1))
    get_boxes = getattr(source, "boxes", None)
    get_boxes = get_boxes if callable(get_boxes) else (lambda i: source[i][1])
    per_image = [np.asarray(get_boxes(i), np.float64).reshape(-1, 4) for i in range(n)]
    counts = np.array([len(b) for b in per_image], np.int64)
    boxes = np.concatenate(per_image) if per_image else np.zeros((0, 4))
    sizes = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
    stats = {
        "num_images": n, "num_faces": int(counts.sum()),
        "empty_fraction": float((counts == 0).mean()) if n else 0.0,
        "faces_per_image": {"mean": float(counts.mean()) if n else 0.0, "max": int(counts.max(initial=0)),
                            "histogram": _histogram(counts, (0, 1, 2, 3, 5, 10, 20, 50, float("inf")))},
        "face_size_px": {"min": float(sizes.min()) if len(sizes) else None,
                         "median": float(np.median(sizes)) if len(sizes) else None,
                         "max": float(sizes.max()) if len(sizes) else None,
                         "histogram": _histogram(sizes, size_bins)},
        "faces_under_16px": int((sizes < 16).sum()),
    }
    if callable(getattr(source, "meta", None)):
        scenes = [source.meta(i).scene for i in range(n)]
        stats["scenes"] = {name: scenes.count(name) for name in SCENE_TYPES}
    return stats
