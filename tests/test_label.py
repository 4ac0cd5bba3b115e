"""``scratchdet label``: teacher pseudo-labels as COCO JSON, read back by CocoFaces."""

import json
import math
import re

import cv2
import numpy as np
import pytest
import torch

from scratchdet import label
from scratchdet.cli import main
from scratchdet.config import TEACHER_CONF
from scratchdet.data.coco import CocoFaces
from scratchdet.data.synthfaces import SynthFaces
from scratchdet.evaluation import evaluate_detections
from scratchdet.label import YUFACE_HELP, label_folder

NUM_IMAGES = 4


@pytest.fixture(scope="module")
def synth():
    return SynthFaces("test", image_size=256, num_images=NUM_IMAGES, cache=False)


@pytest.fixture
def photos(tmp_path, synth):
    """SynthFaces PNGs (one in a sub-folder), a truncated JPEG, a text file named .jpg and a notes file."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for i in range(NUM_IMAGES):
        name = f"more/face{i}.png" if i == NUM_IMAGES - 1 else f"face{i}.png"
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(synth[i][0], cv2.COLOR_RGB2BGR))
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(synth[0][0], cv2.COLOR_RGB2BGR))
    (folder / "damaged.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    (folder / "fake.jpg").write_text("not a picture")
    (folder / "notes.txt").write_text("holiday 2024")
    return folder


def truth(synth, folder, coco):
    """The SynthFaces boxes of the images of ``coco``, matched by file name."""
    index = {f"face{i}.png": i for i in range(NUM_IMAGES)} | {f"more/face{NUM_IMAGES - 1}.png": NUM_IMAGES - 1}
    return [torch.as_tensor(synth[index[r.path.relative_to(folder).as_posix()]][1]) for r in coco.records]


def test_haar_labels_round_trip_through_cocofaces(photos):
    result = label_folder(photos, teacher="haar", conf=-100.0, min_size=0)
    output = photos / "annotations.json"
    assert result["output"] == output and result["images"] == NUM_IMAGES and result["ignored"] == 1
    data = json.loads(output.read_text())
    assert data["categories"] == [{"id": 1, "name": "face"}]
    assert data["info"]["pseudo_labels"] is True and data["info"]["teacher"] == "haar"
    assert data["info"]["teacher_version"].startswith(f"opencv {cv2.__version__}")
    assert data["info"]["conf"] == -100.0 and data["info"]["date_created"]
    assert {im["file_name"] for im in data["images"]} == {"face0.png", "face1.png", "face2.png", "more/face3.png"}
    assert all(im["width"] == 256 and im["height"] == 256 for im in data["images"])
    assert len(data["annotations"]) == result["faces"] > 0
    for a in data["annotations"]:
        assert a["category_id"] == 1 and a["iscrowd"] == 0 and isinstance(a["score"], float)
        assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], abs=0.05)
    coco = CocoFaces(output, image_root=photos)
    assert len(coco) == NUM_IMAGES and sum(coco.report.dropped.values()) == 0
    by_file = {im["id"]: im["file_name"] for im in data["images"]}
    for record in coco.records:  # CocoFaces's xyxy boxes are the JSON's xywh, converted back
        xywh = [a["bbox"] for a in data["annotations"] if by_file[a["image_id"]] == record.path.relative_to(
            photos).as_posix()]
        expected = np.array([[x, y, x + w, y + h] for x, y, w, h in xywh], np.float32).reshape(-1, 4)
        np.testing.assert_allclose(record.boxes, expected, atol=1e-4)
    image, boxes = coco[0]
    assert image.shape == (256, 256, 3) and boxes.shape[1] == 4


def test_damaged_and_fake_images_are_skipped_and_listed(photos):
    result = label_folder(photos, teacher="haar")
    assert sorted(s["file"].rsplit("/", 1)[-1] for s in result["skipped"]) == ["damaged.jpg", "fake.jpg"]
    assert any("truncated" in s["error"] for s in result["skipped"])
    assert result["images"] == NUM_IMAGES


def test_refuses_to_overwrite_unless_asked(photos):
    output = photos / "annotations.json"
    output.write_text('{"mine": "hand-made labels"}')
    before = output.read_bytes()
    with pytest.raises(FileExistsError, match=re.escape(str(output))):
        label_folder(photos, teacher="haar")
    assert output.read_bytes() == before
    result = label_folder(photos, teacher="haar", overwrite=True)
    assert result["images"] == NUM_IMAGES and json.loads(output.read_text())["info"]["teacher"] == "haar"
    assert [p.name for p in photos.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_conf_and_min_size_filter_the_teachers_faces(photos, tmp_path):
    loose = label_folder(photos, teacher="haar", conf=-100.0, min_size=0, out=tmp_path / "all.json")
    strict = label_folder(photos, teacher="haar", conf=-100.0, min_size=1000, out=tmp_path / "none.json")
    assert loose["faces"] > 0 and strict["faces"] == 0
    scores = [a["score"] for a in json.loads((tmp_path / "all.json").read_text())["annotations"]]
    cut = sorted(scores)[len(scores) // 2]
    kept = label_folder(photos, teacher="haar", conf=cut, min_size=0, out=tmp_path / "half.json")
    assert kept["faces"] == sum(s >= cut for s in scores)


@pytest.mark.parametrize("conf", [1.5, -0.1, float("nan"), float("inf"), True, "0.5"])
def test_bad_conf_is_rejected_naming_the_value(photos, conf):
    with pytest.raises(ValueError, match=re.escape(repr(conf))):
        label_folder(photos, teacher="yunet", conf=conf)
    assert not (photos / "annotations.json").exists()


@pytest.mark.parametrize("kwargs, named", [({"teacher": "retina"}, "'retina'"), ({"min_size": -1}, "-1"),
                                           ({"teacher": "haar", "conf": math.nan}, "nan")])
def test_other_bad_arguments_are_rejected(photos, kwargs, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        label_folder(photos, **kwargs)


def test_missing_folder_and_folder_without_images(tmp_path):
    with pytest.raises(NotADirectoryError, match="nowhere"):
        label_folder(tmp_path / "nowhere", teacher="haar")
    (tmp_path / "notes.txt").write_text("no photos here")
    with pytest.raises(ValueError, match="no image files"):
        label_folder(tmp_path, teacher="haar")


def test_only_unreadable_images_writes_nothing(tmp_path):
    (tmp_path / "a.jpg").write_text("not a picture")
    with pytest.raises(OSError, match="nothing written"):
        label_folder(tmp_path, teacher="haar")
    assert not (tmp_path / "annotations.json").exists()


def test_yunet_without_yuface_says_how_to_install(photos, monkeypatch):
    def no_yuface(*args, **kwargs):
        raise ImportError("No module named 'yuface'")

    monkeypatch.setattr(label, "YuFaceDetector", no_yuface)
    with pytest.raises(ImportError, match="pip install yuface") as error:
        label_folder(photos, teacher="yunet")
    assert "Python < 3.12" in str(error.value) and "x86_64" in str(error.value)
    assert not (photos / "annotations.json").exists()


def test_cli_label(photos, tmp_path, capsys):
    out = tmp_path / "labels" / "faces.json"
    status = main(["label", str(photos), "--teacher", "haar", "--out", str(out), "--no-progress"])
    stdout = capsys.readouterr().out
    assert status == 0 and out.is_file()
    assert f"{NUM_IMAGES} images labelled" in stdout and "2 skipped" in stdout and str(out) in stdout
    assert "damaged.jpg" in stdout
    assert (f"scratchdet train --config configs/demo.yaml --data.dataset coco --data.root {photos} "
            f"--data.annotations {out}") in stdout
    assert len(CocoFaces(out, image_root=photos)) == NUM_IMAGES


@pytest.mark.parametrize("args, message", [
    (["--teacher", "haar", "--out", "EXISTING"], "already exists; pass --overwrite"),
    (["--conf", "1.5"], "got 1.5"),
    (["--conf", "nan"], "got nan"),
])
def test_cli_errors_are_one_line_with_status_2(photos, capsys, args, message):
    existing = photos / "annotations.json"
    existing.write_text("{}")
    args = [str(existing) if a == "EXISTING" else a for a in args]
    status = main(["label", str(photos), *args, "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    assert existing.read_text() == "{}"


def test_cli_yuface_missing_is_one_line(photos, capsys, monkeypatch):
    def no_yuface(*args, **kwargs):
        raise ImportError("No module named 'yuface'")

    monkeypatch.setattr(label, "YuFaceDetector", no_yuface)
    status = main(["label", str(photos), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and "pip install yuface" in err and len(err.strip().splitlines()) == 1


def test_yunet_labels_match_the_true_faces(photos, synth):
    pytest.importorskip("yuface")
    result = label_folder(photos)  # the defaults: yunet, TEACHER_CONF["yunet"]
    data = json.loads((photos / "annotations.json").read_text())
    assert data["info"]["teacher"] == "yunet" and data["info"]["conf"] == TEACHER_CONF["yunet"]
    assert data["info"]["teacher_version"].startswith("yuface ")
    assert result["faces"] >= 15 and min(a["score"] for a in data["annotations"]) >= TEACHER_CONF["yunet"]
    coco = CocoFaces(photos / "annotations.json", image_root=photos)
    scores = {im["id"]: [a["score"] for a in data["annotations"] if a["image_id"] == im["id"]] for im in data["images"]}
    predictions = [{"boxes": torch.as_tensor(r.boxes), "scores": torch.tensor(scores[im["id"]])}
                   for r, im in zip(coco.records, data["images"], strict=True)]
    metrics = evaluate_detections(predictions, truth(synth, photos, coco), iou_thresholds=0.5)
    precision = metrics["tp"] / metrics["num_detections"]
    # measured on these 4 images (yuface 2023.5.1, conf 0.6, min size 10 px): 35 faces of 123 true ones
    # (most are smaller than 10 px), precision at IoU 0.5 0.80, AP50 0.21; the bounds are half of that
    assert precision > 0.4 and metrics["ap50"] > 0.1
