"""Export: TorchScript (letterbox + model + decode + NMS) and ONNX (grid) equal the eager model."""

import argparse
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torchvision

from scratchdet import export
from scratchdet.boxes import box_area
from scratchdet.config import DetectorConfig
from scratchdet.model import YoloDetector, letterbox

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*is deprecated:FutureWarning")

SIZES = [(64, 64), (50, 80), (97, 31), (480, 640), (3, 5), (1, 128), (5, 128), (200, 200)]


@pytest.fixture(scope="module")
def model():
    """An untrained small model whose head is randomised so that it predicts many varied boxes."""
    torch.manual_seed(0)
    detector = YoloDetector(DetectorConfig(image_size=64, num_cells=4), preset="small").eval()
    with torch.no_grad():
        detector.head.out.weight.normal_(std=0.3)
        detector.head.out.bias.normal_(std=1.0)
    return detector


@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]


@pytest.fixture(scope="module")
def torchscript_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ts") / "face.torchscript.pt"
    return export.export_torchscript(model, path, score_threshold=0.2, iou_threshold=0.3)


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")
    return export.export_onnx(model, tmp_path_factory.mktemp("onnx") / "face.onnx")


@pytest.mark.parametrize("hw", SIZES)
def test_script_letterbox_equals_model_letterbox(hw):
    image = torch.rand(3, *hw, generator=torch.Generator().manual_seed(1))
    expected, (sx, sy) = letterbox(image, 64)
    padded, scale_x, scale_y = torch.jit.script(export._letterbox)(image, 64, 114 / 255)
    torch.testing.assert_close(padded, expected, rtol=0, atol=0)
    assert (scale_x, scale_y) == (sx, sy)


def test_script_area_equals_box_area():
    boxes = torch.rand(50, 4, generator=torch.Generator().manual_seed(0)) * 20  # some degenerate
    torch.testing.assert_close(torch.jit.script(export._area)(boxes), box_area(boxes), rtol=0, atol=0)


@pytest.mark.parametrize("iou_threshold", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("count", [0, 1, 60])
def test_script_nms_equals_torchvision(iou_threshold, count):
    g = torch.Generator().manual_seed(count)
    xy = torch.rand(count, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(count, 2, generator=g) * 30], dim=1)
    scores = torch.rand(count, generator=g)
    order = scores.argsort(descending=True)
    keep = torch.jit.script(export._greedy_nms)(boxes[order], iou_threshold)
    assert order[keep].tolist() == torchvision.ops.nms(boxes, scores, iou_threshold).tolist()


def test_torchscript_equals_predict(model, torchscript_file, photos):
    scripted = export.load_torchscript(torchscript_file)
    total = 0
    for photo in photos:
        boxes, scores = scripted(torch.from_numpy(photo))
        expected = model.predict(photo, score_threshold=0.2, iou_threshold=0.3)[0]
        assert boxes.shape == expected["boxes"].shape
        torch.testing.assert_close(boxes, expected["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(scores, expected["scores"], rtol=0, atol=1e-4)
        total += len(boxes)
    assert total > len(photos)  # the comparison saw real detections, not only empty lists


def test_torchscript_parity_report(model, torchscript_file, photos):
    result = export.torchscript_parity(model, torchscript_file, photos[:3])
    assert result["same_counts"] and result["max_abs_box"] < 1e-4 and result["max_abs_score"] < 1e-4


def test_torchscript_file_runs_without_scratchdet(model, torchscript_file, photos, tmp_path):
    photo = photos[3]
    expected = model.predict(photo, score_threshold=0.2, iou_threshold=0.3)[0]
    torch.save({"photo": torch.from_numpy(photo), **expected}, tmp_path / "case.pt")
    code = textwrap.dedent(f"""
        import sys
        sys.modules["scratchdet"] = sys.modules["torchvision"] = None  # importing either now fails
        import torch
        detector = torch.jit.load({str(torchscript_file)!r})
        case = torch.load({str(tmp_path / "case.pt")!r})
        boxes, scores = detector(case["photo"])
        torch.testing.assert_close(boxes, case["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(scores, case["scores"], rtol=0, atol=1e-4)
        print("ok", len(boxes))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", str(len(expected["boxes"]))]


@pytest.mark.parametrize("image,match", [
    (torch.zeros(10, 10, 3), "uint8 Tensor"),
    (torch.zeros(3, 10, 10, dtype=torch.uint8), r"got shape \[3, 10, 10\]"),
])
def test_torchscript_rejects_bad_images(torchscript_file, image, match):
    with pytest.raises(Exception, match=match):
        export.load_torchscript(torchscript_file)(image)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_onnx_equals_eager_grid(model, onnx_file, batch_size):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    images = torch.rand(batch_size, 3, 64, 64, generator=torch.Generator().manual_seed(batch_size))
    session = export.onnx_session(onnx_file)
    assert isinstance(session, ort.InferenceSession)
    grid = session.run(["grid"], {"images": images.numpy()})[0]
    with torch.no_grad():
        expected = model(images)
    torch.testing.assert_close(torch.from_numpy(grid), expected, rtol=0, atol=1e-4)


def test_onnx_detect_equals_predict(model, onnx_file, photos):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    session, total = export.onnx_session(onnx_file), 0
    for photo in photos:
        got = export.onnx_detect(session, model.config, photo, score_threshold=0.2, iou_threshold=0.3)
        want = model.predict(photo, score_threshold=0.2, iou_threshold=0.3)[0]
        assert got["boxes"].shape == want["boxes"].shape
        torch.testing.assert_close(got["boxes"], want["boxes"], rtol=0, atol=1e-3)  # pixels
        torch.testing.assert_close(got["scores"], want["scores"], rtol=0, atol=1e-4)
        total += len(want["boxes"])
    assert total > len(photos)


def test_onnx_parity_report(model, onnx_file):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    result = export.onnx_parity(model, onnx_file, batch_size=2)
    assert result["shape"] == [2, 4, 4, 10] and result["max_abs_grid"] < 1e-4


@pytest.mark.parametrize("kwargs,error,match", [
    ({"score_threshold": 1.5}, ValueError, "score_threshold must be a number in"),
    ({"iou_threshold": -0.1}, ValueError, "iou_threshold must be a number in"),
    ({"max_detections": 0}, ValueError, "max_detections must be a positive int"),
])
def test_end_to_end_detector_rejects_bad_settings(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        export.EndToEndDetector(model, **kwargs)


def test_export_rejects_bad_input(model, tmp_path):
    with pytest.raises(TypeError, match="model must be a YoloDetector, got Linear"):
        export.export_torchscript(torch.nn.Linear(2, 2), tmp_path / "x.pt")
    with pytest.raises(ValueError, match="opset must be an int >= 18.*got 11"):
        export.export_onnx(model, tmp_path / "x.onnx", opset=11)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        export.onnx_session(tmp_path / "missing.onnx")


def _parse(argv):
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_exports_torchscript_and_prints_parity(model, tmp_path, capsys):
    model.save(tmp_path / "model.pt")
    export.run(_parse([str(tmp_path / "model.pt"), "--score-threshold", "0.2"]))
    out = capsys.readouterr().out
    assert (tmp_path / "model.torchscript.pt").is_file()
    assert "within 1e-4: True" in out


def test_cli_exports_onnx_and_prints_parity(model, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    model.save(tmp_path / "model.pt")
    export.run(_parse([str(tmp_path / "model.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]))
    assert (tmp_path / "m.onnx").is_file() and not (tmp_path / "m.onnx.data").exists()
    assert "within 1e-4: True" in capsys.readouterr().out


@pytest.mark.parametrize("argv,error,match", [
    (["{tmp}/missing.pt"], FileNotFoundError, "does not exist"),
    (["{tmp}/garbage.pt"], ValueError, "garbage.pt.* (not a readable checkpoint|could not read)"),
])
def test_cli_errors_are_one_line(tmp_path, argv, error, match):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(error, match=match) as info:
        export.run(_parse([a.format(tmp=tmp_path) for a in argv]))
    assert "\n" not in str(info.value)
