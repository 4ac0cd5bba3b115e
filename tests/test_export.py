"""Export: torch.export (.pt2) and ONNX hold the network at any batch and size; their wrappers equal predict."""

import argparse
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from scratchdet import export
from scratchdet.config import DetectorConfig
from scratchdet.data.photos import read_image, sample_photos
from scratchdet.model import YoloDetector

PHOTO_SIZES = [(64, 64), (50, 80), (97, 31), (480, 640), (3, 5), (1, 128), (200, 200)]
INPUT_SIZES = [None, 256, 480, (96, 160)]  # None: the training size, 64; stride 16


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
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in PHOTO_SIZES] + \
        [read_image(p) for p in sample_photos()]


@pytest.fixture(scope="module")
def pt2_file(model, tmp_path_factory):
    return export.export_pt2(model, tmp_path_factory.mktemp("pt2") / "face.pt2")


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    return export.export_onnx(model, tmp_path_factory.mktemp("onnx") / "face.onnx")


@pytest.fixture(scope="module", params=["pt2", "onnx"])
def exported(request):
    return export.load_exported(request.getfixturevalue(f"{request.param}_file"))


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (3, 3, 64, 64), (2, 3, 480, 480), (1, 3, 96, 160), (1, 3, 32, 48)])
def test_exported_grid_equals_eager_at_any_batch_and_size(model, exported, shape):
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(shape[0]))
    with torch.no_grad():
        expected = model(images)  # (N, H/16, W/16, B*5)
    got = exported.grid(images)
    assert got.shape == expected.shape == (shape[0], shape[2] // 16, shape[3] // 16, 10)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("image_size", INPUT_SIZES)
def test_exported_predict_equals_eager_predict(model, exported, photos, image_size):
    got = exported.predict(photos, image_size, score_threshold=0.2, iou_threshold=0.3)
    want = model.predict(photos, image_size, score_threshold=0.2, iou_threshold=0.3)
    assert sum(len(w["boxes"]) for w in want) > len(photos)
    for g, w in zip(got, want):
        assert g["boxes"].shape == w["boxes"].shape
        torch.testing.assert_close(g["boxes"], w["boxes"], rtol=0, atol=1e-3)  # photo pixels
        torch.testing.assert_close(g["scores"], w["scores"], rtol=0, atol=1e-4)


def test_parity_report(model, exported, photos):
    result = export.parity(model, exported, photos[:3], (None, 256))
    assert result["sizes"] == [64, 256] and result["same_counts"]
    assert result["max_abs_box"] < 1e-3 and result["max_abs_score"] < 1e-4


def test_files_carry_the_config(model, exported):
    assert exported.config == model.config and exported.hyperparameters == model.hyperparameters


def test_pt2_file_runs_without_scratchdet(model, pt2_file, tmp_path):
    images = torch.rand(2, 3, 96, 160)
    with torch.no_grad():
        torch.save({"images": images, "grid": model(images)}, tmp_path / "case.pt")
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["scratchdet"] = None  # importing it now fails
        import torch
        extra = {{"scratchdet.json": ""}}
        net = torch.export.load({str(pt2_file)!r}, extra_files=extra).module()
        case = torch.load({str(tmp_path / "case.pt")!r})
        torch.testing.assert_close(net(case["images"]), case["grid"], rtol=0, atol=1e-4)
        print("ok", json.loads(extra["scratchdet.json"])["hyperparameters"]["config"]["image_size"])
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "64"]


def test_onnx_metadata_and_dynamic_axes(onnx_file):
    import onnx

    proto = onnx.load(str(onnx_file))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["scratchdet"])["hyperparameters"]["config"]["num_cells"] == 4
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))


def test_exported_rejects_sizes_off_the_stride(exported):
    with pytest.raises(ValueError, match=r"multiples of the stride 16, got \[1, 3, 64, 70\]"):
        exported.grid(torch.rand(1, 3, 64, 70))
    with pytest.raises(ValueError, match=r"from 32 to 1024 px \(2 to 64 cells of 16\), got \[1, 3, 16, 64\]"):
        exported.grid(torch.rand(1, 3, 16, 64))
    with pytest.raises(ValueError, match=r"image_size 70 must be a multiple of the model's stride 16"):
        exported.predict(np.zeros((10, 10, 3), np.uint8), 70)


def test_export_rejects_bad_input_and_keeps_existing_files(model, tmp_path):
    with pytest.raises(TypeError, match="model must be a YoloDetector, got Linear"):
        export.export_pt2(torch.nn.Linear(2, 2), tmp_path / "x.pt2")
    with pytest.raises(ValueError, match="opset must be an int >= 18.*got 11"):
        export.export_onnx(model, tmp_path / "x.onnx", opset=11)
    with pytest.raises(FileNotFoundError, match="no exported model"):
        export.load_exported(tmp_path / "missing.onnx")
    (tmp_path / "keep.pt2").write_bytes(b"precious")
    with pytest.raises(ValueError, match=r"keep.pt2 exists; pass --overwrite"):
        export.export_pt2(model, tmp_path / "keep.pt2")
    assert (tmp_path / "keep.pt2").read_bytes() == b"precious"
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(ValueError, match=r"expected a .pt2 or .onnx file"):
        export.load_exported(tmp_path / "model.txt")


def _parse(argv):
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_cli_exports_and_prints_parity_at_two_sizes(model, tmp_path, capsys, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    model.save(tmp_path / "model.pt")
    export.run(_parse([str(tmp_path / "model.pt"), "--format", fmt]))
    out = capsys.readouterr().out
    assert (tmp_path / f"model.{fmt}").is_file() and not (tmp_path / "model.onnx.data").exists()
    assert "'sizes': [64, (64, 128)]" in out and "within tolerance: True" in out
    with pytest.raises(ValueError, match=rf"model.{fmt} exists; pass --overwrite"):
        export.run(_parse([str(tmp_path / "model.pt"), "--format", fmt, "--no-check"]))
    export.run(_parse([str(tmp_path / "model.pt"), "--format", fmt, "--no-check", "--overwrite"]))


@pytest.mark.parametrize("argv,error,match", [
    (["{tmp}/missing.pt"], FileNotFoundError, "does not exist"),
    (["{tmp}/garbage.pt"], ValueError, "garbage.pt.* (not a readable checkpoint|could not read)"),
    (["{tmp}/model.pt", "--out", "{tmp}/model.pt"], ValueError, r"--out .*model.pt is the checkpoint itself"),
    (["{tmp}/model.pt", "--out", "{tmp}/model.pt", "--overwrite"], ValueError, r"is the checkpoint itself"),
    (["{tmp}/model.pt", "--out", "{tmp}/./model.pt"], ValueError, r"is the checkpoint itself"),
])
def test_cli_errors_are_one_line_and_never_touch_the_checkpoint(model, tmp_path, argv, error, match):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    model.save(tmp_path / "model.pt")
    before = (tmp_path / "model.pt").read_bytes()
    with pytest.raises(error, match=match) as info:
        export.run(_parse([a.format(tmp=tmp_path) for a in argv]))
    assert "\n" not in str(info.value)
    assert (tmp_path / "model.pt").read_bytes() == before
