"""Tests for scratchdet.data.synthfaces: determinism, labels, variety, cache, errors."""

import pickle

import cv2
import numpy as np
import pytest
import torch

from scratchdet.boxes import check_boxes
from scratchdet.data import _draw
from scratchdet.data import synthfaces as sf
from scratchdet.data.synthfaces import (
    SCENE_TYPES,
    SPLIT_SIZES,
    SynthFaces,
    dataset_statistics,
    generate_image,
    generate_sample,
)

SIZE = 256
NUM_SAMPLES = 60


@pytest.fixture(scope="module")
def val_samples():
    return [generate_sample(0, "val", i, SIZE) for i in range(NUM_SAMPLES)]


def _same(a, b):
    return a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


# ---------------------------------------------------------------- determinism


def test_same_arguments_give_same_bytes():
    first = [generate_image(3, "train", i, 128) for i in range(4)]
    again = [generate_image(3, "train", i, 128) for i in (3, 1, 0, 2)]  # random access, any order
    assert all(_same(first[i], again[j]) for j, i in enumerate((3, 1, 0, 2)))


def test_fresh_datasets_agree_with_generate_image(tmp_path):
    a = SynthFaces("test", image_size=96, num_images=3, seed=5, cache=False)
    b = SynthFaces("test", image_size=96, num_images=3, seed=5, cache=False)
    for i in range(3):
        assert _same(a[i], b[i])
        assert _same(a[i], generate_image(5, "test", i, 96))


@pytest.mark.parametrize("other", [("val", 0), ("test", 0), ("train", 1)])
def test_splits_and_seeds_differ(other):
    split, seed = other
    for i in range(3):
        assert not _same(generate_image(0, "train", i, 96), generate_image(seed, split, i, 96))


# ---------------------------------------------------------------- images and labels


def test_images_and_boxes_follow_the_source_contract(val_samples):
    for s in val_samples:
        assert s.image.dtype == np.uint8 and s.image.shape == (SIZE, SIZE, 3)
        assert s.image.flags.c_contiguous
        assert s.image.std() > 5, "backgrounds must not be flat"
        assert s.boxes.dtype == np.float32 and s.boxes.ndim == 2 and s.boxes.shape[1] == 4
        check_boxes(torch.from_numpy(s.boxes), "xyxy", "boxes", image_size=SIZE)
        assert len(s.boxes) == s.meta.num_faces


@pytest.mark.parametrize("image_size", [32, 64, 480])
def test_other_image_sizes(image_size):
    for i in range(3):
        image, boxes = generate_image(0, "val", i, image_size)
        assert image.shape == (image_size, image_size, 3)
        check_boxes(torch.from_numpy(boxes), image_size=image_size)


def test_faces_span_small_to_large(val_samples):
    boxes = np.concatenate([s.boxes for s in val_samples])
    sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    assert sizes.min() < 12 and sizes.max() > 150
    assert ((sizes > 32) & (sizes < 96)).sum() > 20, "mid-size faces too"


def test_scene_variety(val_samples):
    metas = [s.meta for s in val_samples]
    assert {m.scene for m in metas} == set(SCENE_TYPES)
    assert max(m.num_faces for m in metas) >= 15, "a crowd"
    assert any(m.num_faces == 0 for m in metas), "an image without faces"
    assert any(m.num_faces == 1 for m in metas), "a portrait"
    assert any(m.num_faces == 0 and m.num_distractors > 0 for m in metas), "distractors alone"
    assert any(m.num_faces > 0 and m.num_distractors > 0 for m in metas), "distractors among faces"
    assert any(m.num_occluders > 0 for m in metas) and any(m.num_unlabelled > 0 for m in metas)
    for m in metas:
        if m.scene == "empty":
            assert m.num_faces == 0


@pytest.mark.parametrize("angle", [0.0, 12.0, -25.0, 25.0])
@pytest.mark.parametrize("half_width", [3.0, 10.0, 40.0])
def test_face_box_is_the_tight_box_of_the_drawn_oval(angle, half_width):
    face = _draw.Face(64.3, 70.8, half_width, 1.3 * half_width, angle, 0.0, (1, 1, 1), (1, 1, 1), 0, [])
    mask = np.zeros((160, 160), np.uint8)
    face.ell(mask, 0, 0, 1, 1, 1, line=cv2.LINE_8)
    ys, xs = np.nonzero(mask)
    extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])  # pixel i spans [i, i+1)
    np.testing.assert_allclose(extent, face.box, atol=1.5)


def _face(cx, cy, a=10.0):
    return _draw.Face(cx, cy, a, 1.25 * a, 0.0, 0.0, (1, 1, 1), (1, 1, 1), 0, [0.0] * 24)


def test_labelling_rule_by_hand():
    faces = [_face(50, 50), _face(-1, 50), _face(3, 50), _face(80, 80), _face(20, 80)]
    # in frame: all; 45% (x from -11 to 9); 65%; all; all
    drawn = np.array([300, 100, 150, 300, 300])
    visible = np.array([300, 100, 150, 80, 100])  # face 3: 27% visible, face 4: 33%
    boxes, num_unlabelled = sf._labels(faces, drawn, visible, 100)
    np.testing.assert_allclose(boxes, [[40, 37.5, 60, 62.5], [0, 37.5, 13, 62.5], [10, 67.5, 30, 92.5]])
    assert boxes.dtype == np.float32 and num_unlabelled == 2


def test_later_drawing_hides_earlier_faces():
    img = np.zeros((64, 64, 3), np.uint8)
    owner = np.zeros((64, 64), np.uint8)
    back, front = _face(30, 30, 8), _face(34, 32, 9)
    drawn = [_draw.draw_face(img, owner, k + 1, f, body=False) for k, f in enumerate((back, front))]
    visible = np.bincount(owner.ravel(), minlength=3)[1:]
    assert visible[1] == drawn[1] and 0 < visible[0] < 0.5 * drawn[0]


# ---------------------------------------------------------------- dataset and cache


def test_cache_round_trip_equals_on_the_fly(tmp_path):
    cached = SynthFaces("val", image_size=64, num_images=5, seed=2, root=tmp_path)
    direct = SynthFaces("val", image_size=64, num_images=5, seed=2, cache=False)
    assert cached.cache_dir == tmp_path / "synthfaces" / cached.key
    assert sorted(p.name for p in cached.cache_dir.iterdir()) == ["images.npy", "info.json", "labels.npz"]
    assert len(cached) == 5 and list((tmp_path / "synthfaces").iterdir()) == [cached.cache_dir]
    for i in range(-5, 5):
        assert _same(cached[i], direct[i])
        assert cached.meta(i) == direct.meta(i)
        np.testing.assert_array_equal(cached.boxes(i), direct.boxes(i))
    image, _ = cached[0]
    image[:] = 0  # callers get their own copy, the cache stays read-only
    assert _same(cached[0], direct[0])


def test_cache_is_reused_and_pickles(tmp_path, monkeypatch):
    first = SynthFaces("train", image_size=48, num_images=3, root=tmp_path)
    expected = [first[i] for i in range(3)]

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been read, not rebuilt")

    monkeypatch.setattr(sf, "generate_sample", fail)
    again = pickle.loads(pickle.dumps(SynthFaces("train", image_size=48, num_images=3, root=tmp_path)))
    assert all(_same(again[i], expected[i]) for i in range(3))


def test_cache_key_separates_versions_and_settings(tmp_path, monkeypatch):
    keys = {SynthFaces("val", image_size=s, num_images=n, seed=k, cache=False).key
            for s, n, k in [(64, 2, 0), (96, 2, 0), (64, 3, 0), (64, 2, 1)]}
    assert len(keys) == 4
    monkeypatch.setattr(sf, "GENERATOR_VERSION", sf.GENERATOR_VERSION + 1)
    assert SynthFaces("val", image_size=64, num_images=2, cache=False).key not in keys


def test_concurrent_build_keeps_the_winner(tmp_path):
    ds = SynthFaces("test", image_size=40, num_images=2, root=tmp_path)
    before = (ds.cache_dir / "images.npy").stat().st_mtime_ns
    sf._build_cache(ds, ds.cache_dir, progress=False)  # a second process that finishes later
    assert (ds.cache_dir / "images.npy").stat().st_mtime_ns == before
    assert list((tmp_path / "synthfaces").iterdir()) == [ds.cache_dir], "no temporary folders left"


def test_corrupt_cache_names_the_folder(tmp_path):
    ds = SynthFaces("test", image_size=40, num_images=2, root=tmp_path)
    (ds.cache_dir / "labels.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="delete the folder"):
        SynthFaces("test", image_size=40, num_images=2, root=tmp_path)


def test_default_split_sizes():
    assert SPLIT_SIZES == {"train": 4000, "val": 500, "test": 500}
    assert len(SynthFaces("val", cache=False)) == 500


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(split="training"), ValueError, "split must be one of"),
        (dict(image_size=16), ValueError, "image_size must be in"),
        (dict(image_size=256.0), TypeError, "image_size must be an int"),
        (dict(image_size=True), TypeError, "image_size must be an int"),
        (dict(num_images=0), ValueError, "num_images must be >= 1"),
        (dict(seed=-1), ValueError, "seed must be >= 0"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        SynthFaces(cache=False, **kwargs)


def test_bad_indices_raise():
    ds = SynthFaces("val", image_size=32, num_images=4, cache=False)
    with pytest.raises(IndexError, match="index 4 is out of range"):
        ds[4]
    with pytest.raises(IndexError, match="out of range"):
        ds.meta(-5)
    with pytest.raises(TypeError, match="index must be an int"):
        ds["0"]
    with pytest.raises(ValueError, match="index must be >= 0"):
        generate_sample(0, "val", -1)
    assert len(list(ds)) == 4  # iteration stops at IndexError


# ---------------------------------------------------------------- statistics


class _ListSource:
    def __init__(self, boxes):
        self.items = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return np.zeros((8, 8, 3), np.uint8), self.items[i]


def test_statistics_by_hand():
    source = _ListSource([[], [[0, 0, 4, 4], [0, 0, 10, 40]], [[0, 0, 200, 200]]])
    stats = dataset_statistics(source)
    assert stats["num_images"] == 3 and stats["num_faces"] == 3
    assert stats["empty_fraction"] == pytest.approx(1 / 3)
    assert stats["faces_per_image"]["mean"] == pytest.approx(1.0)
    assert stats["faces_per_image"]["histogram"]["0-1"] == 1
    sizes = stats["face_size_px"]
    assert (sizes["min"], sizes["median"], sizes["max"]) == pytest.approx((4, 20, 200))
    assert sizes["histogram"] == {"0-8": 1, "8-16": 0, "16-24": 1, "24-32": 0, "32-48": 0, "48-64": 0,
                                  "64-96": 0, "96-128": 0, "128+": 1}
    assert stats["faces_under_16px"] == 1 and "scenes" not in stats


def test_statistics_of_synthfaces_use_its_boxes(tmp_path):
    ds = SynthFaces("val", image_size=64, num_images=6, root=tmp_path)
    stats = dataset_statistics(ds)
    generic = dataset_statistics(_ListSource([ds[i][1] for i in range(6)]))
    assert {k: v for k, v in stats.items() if k != "scenes"} == generic
    assert sum(stats["scenes"].values()) == 6


def test_a_smaller_split_reads_the_first_images_of_a_larger_cache(tmp_path):
    big = SynthFaces("val", image_size=48, num_images=6, root=tmp_path)
    small = SynthFaces("val", image_size=48, num_images=3, root=tmp_path)
    assert small.cache_dir == big.cache_dir and len(small) == 3
    assert list((tmp_path / "synthfaces").iterdir()) == [big.cache_dir], "no second cache drawn"
    direct = SynthFaces("val", image_size=48, num_images=3, cache=False)
    for i in range(3):
        assert np.array_equal(small[i][0], direct[i][0]) and np.array_equal(small[i][1], direct[i][1])
        assert small.meta(i) == direct.meta(i)
    with pytest.raises(IndexError):
        small[3]
    other_seed = SynthFaces("val", image_size=48, num_images=3, seed=1, root=tmp_path)
    assert other_seed.cache_dir != big.cache_dir
