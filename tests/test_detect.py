"""``scratchdet detect`` on an image, a folder (with bad files), a video, and its one-line errors."""

import argparse
import csv
import json

import cv2
import numpy as np
import pytest
import torch

from scratchdet import detect
from scratchdet.config import NMS_IOU_THRESHOLD, SCORE_THRESHOLD, DetectorConfig
from scratchdet.data.photos import sample_photos
from scratchdet.model import YoloDetector


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained small model (head randomised so it finds boxes), saved with ``YoloDetector.save``."""
    torch.manual_seed(0)
    model = YoloDetector(DetectorConfig(image_size=64, num_cells=4), preset="small").eval()
    with torch.no_grad():
        model.head.out.weight.normal_(std=0.3)
        model.head.out.bias.normal_(std=1.0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return YoloDetector.from_checkpoint(checkpoint)


def photo(seed, h=48, w=80):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_photo(path, image):
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # what detect will read (JPEG is lossy)


def run_detect(argv, checkpoint):
    parser = argparse.ArgumentParser()
    detect.add_arguments(parser)
    detect.run(parser.parse_args([*argv, "--checkpoint", str(checkpoint), "--no-progress"]))


def expected(model, image, score_threshold=SCORE_THRESHOLD, image_size=None):
    found = model.predict(image, image_size, score_threshold=score_threshold, iou_threshold=NMS_IOU_THRESHOLD)[0]
    return found["boxes"].numpy(), found["scores"].numpy()


def test_image_writes_annotated_copy_and_json(model, checkpoint, tmp_path, capsys):
    image = write_photo(tmp_path / "face.png", photo(0))
    run_detect([str(tmp_path / "face.png"), "--out", str(tmp_path / "out")], checkpoint)
    annotated = cv2.imread(str(tmp_path / "out" / "face.png"))
    assert annotated.shape == image.shape
    record = json.loads((tmp_path / "out" / "detections.json").read_text())["images"][0]
    boxes, scores = expected(model, image)
    assert len(scores) > 0 and (record["height"], record["width"]) == (48, 80)
    np.testing.assert_allclose(record["boxes"], boxes, atol=0.01)
    np.testing.assert_allclose(record["scores"], scores, atol=1e-4)
    assert f"1 images, {len(scores)} faces" in capsys.readouterr().out


def test_folder_skips_bad_files_reports_them_and_finishes(model, checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    images = {name: write_photo(folder / name, photo(i, 40 + 10 * i, 60)) for i, name in enumerate(["a.jpg", "b.png"])}
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (folder / "notes.txt").write_text("not an image\n")
    run_detect([str(folder), "--out", str(tmp_path / "out"), "--format", "csv"], checkpoint)
    out = capsys.readouterr().out
    assert "2 images" in out and "skipped 2 of 4 files" in out
    assert "broken.jpg: truncated or damaged JPEG" in out and "notes.txt: could not read image" in out
    with (tmp_path / "out" / "detections.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for name, image in images.items():
        boxes, scores = expected(model, image)
        mine = [r for r in rows if r["file"].endswith(name)]
        assert len(mine) == len(scores)
        np.testing.assert_allclose([float(r["score"]) for r in mine], scores, atol=1e-4)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"a.jpg", "b.png", "detections.csv"}


def test_folder_without_any_image_fails(checkpoint, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(OSError, match=r"no image in .* could be read \(1 files skipped"):
        run_detect([str(tmp_path), "--out", str(tmp_path / "out")], checkpoint)


def write_video(path, frames, fps=10):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def read_video(path):
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_video_writes_annotated_mp4_and_per_frame_json(model, checkpoint, tmp_path, capsys):
    write_video(tmp_path / "clip.mp4", [photo(i) for i in range(5)])
    decoded = read_video(tmp_path / "clip.mp4")
    run_detect([str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "out")], checkpoint)
    assert "5 frames" in capsys.readouterr().out
    assert len(read_video(tmp_path / "out" / "clip.mp4")) == 5
    document = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert [f["frame"] for f in document["frames"]] == list(range(5)) and document["fps"] == 10
    for frame, record in zip(decoded, document["frames"]):
        boxes, scores = expected(model, frame)
        np.testing.assert_allclose(np.reshape(record["boxes"], (-1, 4)), boxes, atol=0.01)


@pytest.mark.parametrize("argv,error,match", [
    (["{tmp}/missing.jpg"], FileNotFoundError, "no such file or folder: .*missing.jpg"),
    (["{tmp}/notes.txt"], OSError, "could not read image .*notes.txt: not an image file or corrupt"),
    (["{tmp}/bad.mp4"], OSError, "could not read video .*bad.mp4: not a video file, corrupt"),
    (["{tmp}/face.png", "--image-size", "100"], ValueError,
     r"--image-size: image_size 100 must be a multiple of the model's stride 16 .*\(96, 96\)"),
    (["{tmp}/face.png", "--out", "{tmp}"], ValueError, "would overwrite the source .*face.png"),
    (["{tmp}/face.png", "--device", "quantum"], ValueError, "--device 'quantum' is not a torch device"),
    (["{tmp}/face.png", "--camera", "0"], ValueError, "either SOURCE .* or --camera N, not both"),
    ([], ValueError, "either SOURCE .* or --camera N"),
    (["{tmp}", "--out", "{tmp}"], ValueError, "is the source folder"),
])
def test_user_errors_are_one_line(checkpoint, tmp_path, argv, error, match):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 100)
    write_photo(tmp_path / "face.png", photo(0))
    with pytest.raises(error, match=match) as info:
        run_detect([a.format(tmp=tmp_path) for a in argv], checkpoint)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content,error,match", [
    (None, FileNotFoundError, "checkpoint .* does not exist"),
    (b"garbage bytes", ValueError, "garbage.pt.* (not a readable checkpoint|could not read)"),
    ("dict", ValueError, "is not a YoloDetector checkpoint"),
])
def test_unreadable_checkpoints(tmp_path, content, error, match):
    path = tmp_path / "garbage.pt"
    if content == "dict":
        torch.save({"weights": 1}, path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=match) as info:
        detect.load_detector(path)
    assert "\n" not in str(info.value)


def test_camera_without_gui_says_how_to_get_one(checkpoint):
    if "GUI:                           NONE" not in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GUI support; the message is for headless builds")
    with pytest.raises(RuntimeError, match=r"without GUI support \(opencv-python-headless.*pip install"):
        run_detect(["--camera", "0"], checkpoint)


def truncated_jpeg(path, fraction=0.6):
    """The first ``fraction`` of a valid JPEG's bytes (cv2 decodes it with a warning, grey at the bottom)."""
    data = sample_photos()[0].read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def test_each_run_gets_a_fresh_folder(checkpoint, tmp_path, monkeypatch, capsys):
    write_photo(tmp_path / "face.png", photo(0))
    monkeypatch.chdir(tmp_path)
    run_detect(["face.png"], checkpoint)
    run_detect(["face.png"], checkpoint)
    runs = tmp_path / "runs" / "detect"
    assert sorted(p.name for p in runs.iterdir()) == ["run", "run2"]
    for name in ("run", "run2"):
        assert {p.name for p in (runs / name).iterdir()} == {"face.png", "detections.json"}
    assert "runs/detect/run2/detections.json" in capsys.readouterr().out


@pytest.mark.parametrize("image_size", ["128", "48x96", "480"])
def test_image_size_any_multiple_of_the_stride(model, checkpoint, tmp_path, image_size):
    image = write_photo(tmp_path / "face.png", photo(3, 60, 90))
    run_detect([str(tmp_path / "face.png"), "--out", str(tmp_path / "out"), "--image-size", image_size], checkpoint)
    size = detect.parse_image_size(image_size)
    boxes, scores = expected(model, image, image_size=size)
    record = json.loads((tmp_path / "out" / "detections.json").read_text())["images"][0]
    assert len(scores) > 0
    np.testing.assert_allclose(np.reshape(record["boxes"], (-1, 4)), boxes, atol=0.01)
    np.testing.assert_allclose(record["scores"], scores, atol=1e-4)


def test_truncated_jpeg_is_skipped_and_counted(checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    write_photo(folder / "good.png", photo(1))
    truncated_jpeg(folder / "cut.jpg")
    run_detect([str(folder), "--out", str(tmp_path / "out")], checkpoint)
    out = capsys.readouterr().out
    assert "1 images" in out and "skipped 1 of 2 files" in out
    assert "cut.jpg: truncated or damaged JPEG" in out and "FF D9" in out
    document = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [r["file"] for r in document["images"]] == [str(folder / "good.png")]
    assert document["skipped"][0]["file"] == str(folder / "cut.jpg")


def test_a_failed_single_image_keeps_the_previous_detections(checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "detections.json").write_text('{"precious": true}')
    with pytest.raises(OSError, match=r"truncated or damaged JPEG .*cut.jpg"):
        run_detect([str(truncated_jpeg(tmp_path / "cut.jpg")), "--out", str(out)], checkpoint)
    assert (out / "detections.json").read_text() == '{"precious": true}'
    assert [p.name for p in out.iterdir()] == ["detections.json"]


@pytest.mark.parametrize("source, error, match", [
    ("src", OSError, r"nothing written"),
    ("bad.mp4", OSError, r"could not read video"),
    ("empty", ValueError, r"holds no files"),
])
def test_a_run_that_reads_nothing_leaves_no_folder(checkpoint, tmp_path, monkeypatch, source, error, match):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.mp4").write_bytes(b"not a video" * 100)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=match):
        run_detect([source], checkpoint)
    runs = tmp_path / "runs" / "detect"
    assert not runs.exists() or list(runs.iterdir()) == []


def interrupt_after(monkeypatch, calls):
    real, count = detect._detect, [0]

    def fake(*args):
        count[0] += 1
        if count[0] > calls:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(detect, "_detect", fake)


def test_ctrl_c_in_a_folder_writes_the_detections_done(checkpoint, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        write_photo(folder / f"{i}.png", photo(i))
    interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_detect([str(folder), "--out", str(tmp_path / "out")], checkpoint)
    document = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert document["interrupted"] and [r["file"] for r in document["images"]] == [str(folder / "0.png"),
                                                                                   str(folder / "1.png")]
    assert f"detections of 2 images in {tmp_path / 'out' / 'detections.json'}" in capsys.readouterr().err


def test_ctrl_c_in_a_video_writes_the_frames_done(checkpoint, tmp_path, monkeypatch, capsys):
    write_video(tmp_path / "clip.mp4", [photo(i) for i in range(5)])
    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_detect([str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "out"), "--format", "csv"], checkpoint)
    with (tmp_path / "out" / "clip.csv").open() as handle:
        frames = {int(row["frame"]) for row in csv.DictReader(handle)}
    assert frames <= {0, 1, 2} and frames
    assert "interrupted after 3 frames" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob(".*.tmp"))
