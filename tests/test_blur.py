"""``blur_faces`` and ``scratchdet detect --blur``; detect's default model (``SCRATCHDET_MODEL``)."""

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import scratchdet
from scratchdet import detect
from scratchdet.anonymise import BLUR_MARGIN, PIXELATE_BLOCKS, blur_faces
from scratchdet.config import BLUR_SCORE_THRESHOLD, DEFAULT_MODEL, NMS_IOU_THRESHOLD, SCORE_THRESHOLD
from scratchdet.data.synthfaces import SynthFaces
from scratchdet.model import YoloDetector

MODEL = Path(__file__).resolve().parents[1] / "models" / "synthfaces_fpn_poolresnet_medium.pt"


@pytest.fixture(scope="module")
def synth():
    """Two SynthFaces test images, ``(image uint8 (256, 256, 3), boxes (M, 4) xyxy px)``: one face, a crowd."""
    data = SynthFaces("test", image_size=256, num_images=2, cache=False)
    return [data[i] for i in range(len(data))]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return YoloDetector.from_checkpoint(MODEL).eval()


def outside_mask(shape, boxes, margin=BLUR_MARGIN):
    """``bool (H, W)``: True where no enlarged box reaches (a loop over boxes, rounded outwards)."""
    keep = np.ones(shape[:2], bool)
    for x1, y1, x2, y2 in np.reshape(boxes, (-1, 4)):
        dx, dy = margin * (x2 - x1), margin * (y2 - y1)
        rows = slice(max(math.floor(y1 - dy), 0), max(math.ceil(y2 + dy), math.floor(y1 - dy) + 1, 0))
        cols = slice(max(math.floor(x1 - dx), 0), max(math.ceil(x2 + dx), math.floor(x1 - dx) + 1, 0))
        keep[rows, cols] = False
    return keep


def laplacian_variance(image):
    return cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()


def change_rate(image):
    """Fraction of horizontally adjacent pixel pairs that differ (pixelation makes runs of equal pixels)."""
    return (np.diff(image.astype(int), axis=1) != 0).any(-1).mean()


def crop(image, box):
    x1, y1, x2, y2 = np.round(box).astype(int)
    return image[y1:y2, x1:x2]


@pytest.mark.parametrize("method", ["gaussian", "pixelate"])
def test_only_the_enlarged_boxes_change_and_their_detail_is_gone(synth, method):
    for image, boxes in synth:
        before = image.copy()
        out = blur_faces(image, boxes, method=method)
        np.testing.assert_array_equal(image, before)  # the input is untouched
        assert out.dtype == np.uint8 and out.shape == image.shape
        outside = outside_mask(image.shape, boxes)
        np.testing.assert_array_equal(out[outside], image[outside])
        faces = [b for b in boxes if min(b[2] - b[0], b[3] - b[1]) >= 12]
        assert faces
        for box in faces:
            face, blurred = crop(image, box), crop(out, box)
            assert not np.array_equal(face, blurred)
            if method == "gaussian":
                assert laplacian_variance(blurred) < 0.3 * laplacian_variance(face), box
            else:
                assert change_rate(blurred) < 0.5 * change_rate(face), box


def test_the_margin_covers_the_edges_of_the_face(synth):
    image, boxes = synth[0]
    out = blur_faces(image, boxes)
    ring = outside_mask(image.shape, boxes, margin=0.0)  # outside the face box (its pixels rounded outwards)
    ring &= ~outside_mask(image.shape, boxes)  # inside the enlarged box, outside the face box
    assert (out[ring] != image[ring]).any(-1).mean() > 0.5
    np.testing.assert_array_equal(blur_faces(image, boxes, margin=0.0)[ring], image[ring])


def test_the_blur_grows_with_the_face():
    """A 300 px face over 16 px squares: a fixed small kernel would leave the squares; ours leaves grey."""
    yy, xx = np.mgrid[:400, :400]
    checker = np.repeat((((yy // 16 + xx // 16) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)
    out = blur_faces(checker, [[50, 50, 350, 350]])
    assert checker[110:290, 110:290].std() > 100 and out[110:290, 110:290].std() < 10
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    row = blur_faces(noise, [[50, 50, 350, 350]], method="pixelate")[200, 0:400]
    runs = 1 + (np.diff(row.astype(int), axis=0) != 0).any(-1).sum()
    assert runs <= PIXELATE_BLOCKS * (1 + 2 * BLUR_MARGIN) + 3  # about 6 blocks across the face, + margins


@pytest.mark.parametrize("method", ["gaussian", "pixelate"])
@pytest.mark.parametrize("boxes,changes", [
    ([[10, 10, 11, 11]], True),  # 1 px: its 3 x 3 enlarged box
    ([[20, 20, 20, 20]], False),  # 0 px: its one pixel, whose blur is itself
    ([[-30, -20, 25, 30]], True),  # over the top-left corner
    ([[40, 50, 90, 70]], True),  # over the right edge (W = 64)
    ([[-50, -50, -10, -10], [80, 10, 100, 40], [10, 90, 20, 120]], False),  # wholly outside, margin too
    (np.zeros((0, 4)), False),
    ([], False),
])
def test_edge_boxes(method, boxes, changes):
    image = np.random.default_rng(1).integers(0, 256, (80, 64, 3), dtype=np.uint8)
    out = blur_faces(image, boxes, method=method)
    outside = outside_mask(image.shape, boxes)
    np.testing.assert_array_equal(out[outside], image[outside])
    assert out.shape == image.shape and out is not image and not np.shares_memory(out, image)
    assert np.array_equal(out, image) != changes


@pytest.mark.parametrize("kwargs,match", [
    ({"image": np.zeros((8, 8, 3), np.float32)}, r"uint8 array \(H, W, 3\) RGB, got float32 \(8, 8, 3\)"),
    ({"image": np.zeros((8, 8), np.uint8)}, r"got uint8 \(8, 8\)"),
    ({"image": np.zeros((8, 8, 4), np.uint8)}, r"got uint8 \(8, 8, 4\)"),
    ({"image": [[0]]}, r"got list"),
    ({"boxes": [1, 2, 3, 4]}, r"shape \(M, 4\) \(xyxy pixels\), got \(4,\)"),
    ({"boxes": np.zeros((2, 5))}, r"got \(2, 5\)"),
    ({"boxes": [[0, 0, np.nan, 4]]}, r"finite, got \[0.0, 0.0, nan, 4.0\]"),
    ({"boxes": [[5, 0, 2, 4]]}, r"x1 <= x2 and y1 <= y2, got \[5.0, 0.0, 2.0, 4.0\]"),
    ({"margin": -0.1}, r"margin must be a finite number >= 0 .*got -0.1"),
    ({"margin": float("inf")}, r"margin .* got inf"),
    ({"method": "mosaic"}, r"method must be one of \('gaussian', 'pixelate'\), got 'mosaic'"),
])
def test_bad_inputs_are_rejected_naming_the_value(kwargs, match):
    arguments = {"image": np.zeros((8, 8, 3), np.uint8), "boxes": [[1, 1, 4, 4]], **kwargs}
    with pytest.raises(ValueError, match=match):
        blur_faces(**arguments)


# --- scratchdet detect --blur -------------------------------------------------------------------

def run_detect(argv):
    parser = argparse.ArgumentParser()
    detect.add_arguments(parser)
    detect.run(parser.parse_args([*argv, "--no-progress"]))


def predicted(model, image, score_threshold):
    return model.predict(image, None, score_threshold=score_threshold, iou_threshold=NMS_IOU_THRESHOLD)[0]["boxes"]


def write_rgb(path, image):
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def test_blur_a_folder_with_the_model_named_by_the_environment(synth, model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(detect.MODEL_ENV, str(MODEL))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (image, _) in enumerate(synth):
        write_rgb(folder / f"{i}.png", image)
    run_detect([str(folder), "--out", str(tmp_path / "out"), "--blur"])
    document = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [len(r["boxes"]) for r in document["images"]] != [0, 0]
    for i, (image, _) in enumerate(synth):
        boxes = predicted(model, image, BLUR_SCORE_THRESHOLD).numpy()
        written = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / f"{i}.png")), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(written, blur_faces(image, boxes))  # blurred, and no box drawn
        np.testing.assert_allclose(np.reshape(document["images"][i]["boxes"], (-1, 4)), boxes, atol=0.01)
    assert "2 images" in capsys.readouterr().out


def read_video(path):
    capture, frames = cv2.VideoCapture(str(path)), []
    while (frame := capture.read())[0]:
        frames.append(cv2.cvtColor(frame[1], cv2.COLOR_BGR2RGB))
    return frames


def test_blur_a_video_pixelated(synth, model, tmp_path, capsys):
    image = synth[0][0]
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (256, 256))
    assert writer.isOpened()
    for k in range(3):
        writer.write(cv2.cvtColor(np.roll(image, 4 * k, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    run_detect([str(tmp_path / "clip.mp4"), "--checkpoint", str(MODEL), "--out", str(tmp_path / "out"),
                "--blur", "--blur-method", "pixelate"])
    assert "3 frames" in capsys.readouterr().out
    document = json.loads((tmp_path / "out" / "clip.json").read_text())
    written, read = read_video(tmp_path / "out" / "clip.mp4"), read_video(tmp_path / "clip.mp4")
    assert len(written) == len(read) == len(document["frames"]) == 3
    for frame, record, original in zip(written, document["frames"], read):
        boxes = predicted(model, original, BLUR_SCORE_THRESHOLD).numpy()
        np.testing.assert_allclose(np.reshape(record["boxes"], (-1, 4)), boxes, atol=0.01)
        assert len(boxes) >= 1
        frame, reference = frame.astype(int), blur_faces(original, boxes, method="pixelate").astype(int)
        for box in boxes:  # the mp4 is lossy: the written face is near the pixelated one, far from the original
            near, far = (np.abs(crop(frame, box) - crop(other, box)).mean() for other in (reference, original))
            assert near < 0.5 * far, (near, far)
        assert np.abs(frame - reference).mean() < 4


@pytest.mark.parametrize("argv,threshold", [
    ([], SCORE_THRESHOLD),
    (["--blur"], BLUR_SCORE_THRESHOLD),
    (["--blur", "--score-threshold", "0.5"], 0.5),
    (["--score-threshold", "0.05"], 0.05),
])
def test_blur_lowers_the_default_threshold_only(synth, tmp_path, monkeypatch, argv, threshold):
    assert BLUR_SCORE_THRESHOLD < SCORE_THRESHOLD
    seen, real = [], detect._detect

    def spy(model, image, args):
        seen.append(args.score_threshold)
        return real(model, image, args)
    monkeypatch.setattr(detect, "_detect", spy)
    write_rgb(tmp_path / "face.png", synth[0][0])
    run_detect([str(tmp_path / "face.png"), "--checkpoint", str(MODEL), "--out", str(tmp_path / "out"), *argv])
    assert seen == [threshold]
    scores = json.loads((tmp_path / "out" / "detections.json").read_text())["images"][0]["scores"]
    assert min(scores, default=1.0) >= threshold - 1e-4


def test_the_default_model_is_in_the_repository():
    assert DEFAULT_MODEL == Path(scratchdet.__file__).resolve().parents[1] / "models" / "faces_mobilenet_v2_fpn.pt"


def test_a_missing_default_model_says_how_to_pass_one(synth, tmp_path, monkeypatch):
    monkeypatch.delenv(detect.MODEL_ENV, raising=False)
    monkeypatch.setattr(detect, "DEFAULT_MODEL", tmp_path / "models" / "faces.pt")
    write_rgb(tmp_path / "face.png", synth[0][0])
    with pytest.raises(FileNotFoundError, match=r"no --checkpoint given and the default model .*faces.pt does not "
                                                r"exist; pass --checkpoint PATH .* or set SCRATCHDET_MODEL") as info:
        run_detect([str(tmp_path / "face.png"), "--out", str(tmp_path / "out")])
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()
    monkeypatch.setenv(detect.MODEL_ENV, str(tmp_path / "elsewhere.pt"))
    with pytest.raises(FileNotFoundError, match=r"SCRATCHDET_MODEL=.*elsewhere.pt does not exist"):
        run_detect([str(tmp_path / "face.png"), "--out", str(tmp_path / "out")])


def test_the_default_model_is_loaded_and_checkpoint_wins(synth, model, tmp_path, monkeypatch):
    monkeypatch.delenv(detect.MODEL_ENV, raising=False)
    monkeypatch.setattr(detect, "DEFAULT_MODEL", MODEL)
    write_rgb(tmp_path / "face.png", synth[0][0])
    run_detect([str(tmp_path / "face.png"), "--out", str(tmp_path / "a")])
    monkeypatch.setenv(detect.MODEL_ENV, str(tmp_path / "missing.pt"))  # --checkpoint is not the default
    run_detect([str(tmp_path / "face.png"), "--out", str(tmp_path / "b"), "--checkpoint", str(MODEL)])
    boxes = predicted(model, synth[0][0], SCORE_THRESHOLD).numpy()
    for out in ("a", "b"):
        record = json.loads((tmp_path / out / "detections.json").read_text())["images"][0]
        np.testing.assert_allclose(np.reshape(record["boxes"], (-1, 4)), boxes, atol=0.01)
