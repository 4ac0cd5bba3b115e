"""Baseline detectors: OpenCV's Haar cascade (and yuface when it is installed)."""

import numpy as np
import pytest
import torch

from scratchdet.baselines import HaarFaceDetector, YuFaceDetector
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


def test_yuface_finds_the_face(hopper):
    pytest.importorskip("yuface")
    out = YuFaceDetector().detect(hopper)
    check_output(out)
    assert box_iou(out["boxes"][:1], HOPPER_FACE).item() > 0.6 and 0 < out["scores"][0] <= 1
