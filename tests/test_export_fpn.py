"""Export of the fpn head: the same files, wrappers and parity as v1 (test_export.py), with candidates as output."""

import numpy as np
import pytest
import torch

from scratchdet import export
from scratchdet.config import DetectorConfig
from scratchdet.data.photos import read_image, sample_photos
from scratchdet.model import YoloDetector


@pytest.fixture(scope="module")
def model():
    """An untrained small fpn model (128 px, strides 8, 16, 32) with randomised heads: many varied boxes."""
    torch.manual_seed(0)
    detector = YoloDetector(DetectorConfig(image_size=128, num_cells=4, head="fpn"), preset="small").eval()
    with torch.no_grad():
        for head in detector.head.heads:
            head[-1].weight.normal_(std=0.3)
            head[-1].bias.normal_(std=1.0)
    return detector


@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(64, 64), (97, 31), (480, 640)]] + \
        [read_image(p) for p in sample_photos()]


@pytest.fixture(scope="module", params=["pt2", "onnx"])
def exported(request, model, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "onnx":
        pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")
        pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
        return export.load_exported(export.export_onnx(model, folder / "face.onnx"))
    return export.load_exported(export.export_pt2(model, folder / "face.pt2"))


@pytest.mark.parametrize("shape", [(1, 3, 128, 128), (2, 3, 96, 160)])
def test_exported_candidates_equal_eager(model, exported, shape):
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(images)  # (N, K, 5)
    h, w = shape[2:]
    assert expected.shape == (shape[0], sum((h // s) * (w // s) for s in (8, 16, 32)), 5)
    torch.testing.assert_close(exported.grid(images), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("image_size", [None, 256, (96, 160)])
def test_exported_predict_equals_eager_predict(model, exported, photos, image_size):
    got = exported.predict(photos, image_size, score_threshold=0.3, iou_threshold=0.3)
    want = model.predict(photos, image_size, score_threshold=0.3, iou_threshold=0.3)
    assert sum(len(w["boxes"]) for w in want) > len(photos)
    for g, w in zip(got, want):
        assert g["boxes"].shape == w["boxes"].shape
        torch.testing.assert_close(g["boxes"], w["boxes"], rtol=0, atol=1e-2)
        torch.testing.assert_close(g["scores"], w["scores"], rtol=0, atol=1e-4)


def test_metadata_describes_the_candidates(exported):
    assert exported.config.head == "fpn"
