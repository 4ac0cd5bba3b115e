"""Baseline detectors: OpenCV's Haar cascade (and yuface when it is installed)."""

import numpy as np
import pytest
import torch

from scratchdet.baselines import HaarFaceDetector, YuFaceDetector, _openmp_runtime
from scratchdet.boxes import box_iou

# Grace Hopper's face in matplotlib's sample photo (600 x 512), drawn by hand: forehead to chin.
HOPPER_FACE = torch.tensor([[165.0, 115.0, 365.0, 330.0]])


@pytest.fixture(scope="module")
def hopper():
    # Read directly (not via scratchdet.data, whose import pulls in Lightning and takes seconds).
    import cv2
    import matplotlib.cbook

    try:
        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    except (FileNotFoundError, OSError, ValueError):
        pytest.skip("matplotlib's grace_hopper.jpg sample is not installed")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def check_output(out):
    assert set(out) == {"boxes", "scores"}
    assert out["boxes"].dtype == torch.float32 and out["boxes"].shape == (len(out["scores"]), 4)
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])
    assert torch.all(out["boxes"][:, 2:] > out["boxes"][:, :2])


def test_haar_finds_the_face(hopper):
    out = HaarFaceDetector().detect(hopper)
    check_output(out)
    assert len(out["boxes"]) == 1
    assert box_iou(out["boxes"], HOPPER_FACE).item() > 0.6


def test_haar_scores_rank_detections(hopper):
    out = HaarFaceDetector(min_neighbors=0)(hopper)  # every raw window: many, with varied scores
    check_output(out)
    assert len(out["scores"]) > 1 and out["scores"].unique().numel() > 1


def test_haar_on_an_empty_image():
    out = HaarFaceDetector().detect(np.full((120, 160, 3), 127, np.uint8))
    check_output(out)
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,)


@pytest.mark.parametrize(
    "image, error, match",
    [
        (np.zeros((10, 10, 3), np.float32), TypeError, "numpy uint8 array"),
        (torch.zeros(3, 10, 10, dtype=torch.uint8), TypeError, "numpy uint8 array"),
        (np.zeros((10, 10), np.uint8), ValueError, r"shape \(H, W, 3\)"),
        (np.zeros((10, 10, 4), np.uint8), ValueError, r"shape \(H, W, 3\)"),
    ],
)
def test_haar_bad_image(image, error, match):
    with pytest.raises(error, match=match):
        HaarFaceDetector().detect(image)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"scale_factor": 1.0}, ValueError, "scale_factor must be a number > 1"),
        ({"min_neighbors": -1}, ValueError, "min_neighbors must be an int >= 0"),
        ({"min_size": (0, 10)}, ValueError, "min_size must be"),
        ({"cascade": "no_such_cascade.xml"}, FileNotFoundError, "Haar cascade not found"),
    ],
)
def test_haar_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        HaarFaceDetector(**kwargs)


def test_haar_explains_opencv_5(monkeypatch):
    import cv2

    monkeypatch.delattr(cv2, "data", raising=False)
    with pytest.raises(RuntimeError, match="ships no Haar cascades"):
        HaarFaceDetector()


def test_yuface_missing_gives_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "yuface", None)  # makes `import yuface` fail
    with pytest.raises(ImportError, match="pip install yuface"):
        YuFaceDetector()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"conf": 1.5}, r"conf must be a number in \[0, 1\], got 1.5"),
        ({"conf": True}, "conf must be a number"),
        ({"threads": 0}, "threads must be an int >= 1 or None, got 0"),
        ({"threads": 1.5}, "threads must be an int"),
    ],
)
def test_yuface_bad_arguments(kwargs, match):  # checked before the import: runs without yuface too
    with pytest.raises(ValueError, match=match):
        YuFaceDetector(**kwargs)


@pytest.fixture(scope="module")
def yuface():
    return pytest.importorskip("yuface", reason="the optional yuface package is not installed "
                                                "(pip install -e '.[dev]')")


def test_yuface_finds_the_face(yuface, hopper):
    out = YuFaceDetector().detect(hopper)
    check_output(out)
    assert box_iou(out["boxes"][:1], HOPPER_FACE).item() > 0.6 and 0.5 < out["scores"][0] <= 1
    assert (out["scores"][1:] < 0.5).all()  # one confident face; the rest is low-score clutter for AP


def test_yuface_boxes_are_in_the_given_image_pixels(yuface, hopper):
    shifted = YuFaceDetector().detect(hopper[60:, 40:])  # the face moves up 60 px and left 40 px
    whole = YuFaceDetector().detect(hopper)
    moved = whole["boxes"][:1] - torch.tensor([40.0, 60.0, 40.0, 60.0])
    assert (shifted["boxes"][:1] - moved).abs().max() <= 6  # the network sees other pixels: a few px


def test_yuface_matches_the_raw_library(yuface, hopper):
    # Reference: yuface's own output, xywh with confidences 0-100, BGR input.
    confs, xywh, _ = yuface.detect(np.ascontiguousarray(hopper[..., ::-1]), conf=0.0)
    out = YuFaceDetector(conf=0.0).detect(hopper)
    order = np.argsort(-confs, kind="stable")
    x, y, w, h = np.asarray(xywh, np.float32)[order].T
    torch.testing.assert_close(out["boxes"], torch.from_numpy(np.stack([x, y, x + w, y + h], 1)))
    torch.testing.assert_close(out["scores"], torch.from_numpy(confs[order].astype(np.float32) / 100))


def test_yuface_conf_drops_low_scores(yuface, hopper):
    everything, confident = YuFaceDetector(conf=0.0)(hopper), YuFaceDetector(conf=0.9)(hopper)
    assert len(confident["scores"]) >= 1 and (confident["scores"] > 0.9).all()
    assert len(confident["scores"]) == int((everything["scores"] > 0.9).sum())


def test_yuface_on_an_empty_image(yuface):
    out = YuFaceDetector().detect(np.full((120, 160, 3), 127, np.uint8))
    check_output(out)
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,)


@pytest.mark.parametrize("threads", [2, 1])
def test_yuface_fixes_its_openmp_threads(yuface, hopper, threads):
    runtime = _openmp_runtime(yuface)
    if runtime is None:
        pytest.skip("this yuface build bundles no OpenMP runtime")
    runtime.omp_set_num_threads(3)  # whatever was set before (OMP_NUM_THREADS, another caller)
    YuFaceDetector(threads=threads).detect(hopper)
    assert runtime.omp_get_max_threads() == threads
