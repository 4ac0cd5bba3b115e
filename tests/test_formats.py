"""Your own data: COCO JSON, YOLO txt, Pascal VOC and imglab XML readers, on fixtures written here.

Each format's writer below is the reference: it writes drawn SynthFaces images
and their boxes the way the format's tools do; the reader must give them back.
"""

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from scratchdet.cli import main
from scratchdet.data import (CocoFaces, FaceDataModule, FormatError, ImglabFaces, VocFaces, YoloTxtFaces,
                             open_labelled)
from scratchdet.data.synthfaces import SynthFaces

N_IMAGES = 4
FORMATS = ("coco", "yolo", "yolo_plain", "voc", "imglab")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """``[(name, image uint8 (64, 64, 3) RGB, boxes float32 (M, 4) xyxy px)]``: drawn faces, a few each."""
    source = SynthFaces("val", image_size=64, root=tmp_path_factory.mktemp("synth"))
    items = []
    for i in range(N_IMAGES):
        image, boxes = source[i]
        items.append((f"img{i}.png", image, np.asarray(boxes[:3], dtype=np.float32)))
    return items


def write_images(folder: Path, items) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, image, _ in items:
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def write_coco(root: Path, items, extra: dict | None = None) -> Path:
    """``root/annotations.json`` + ``root/images/``; bbox ``[x, y, w, h]`` pixels."""
    write_images(root / "images", items)
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "face"}]}
    for k, (name, image, boxes) in enumerate(items):
        data["images"].append({"id": k + 1, "file_name": name, "width": image.shape[1], "height": image.shape[0]})
        for x1, y1, x2, y2 in boxes.tolist():
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": k + 1, "category_id": 1,
                                        "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
    for key, value in (extra or {}).items():
        data[key] = data[key] + value if isinstance(value, list) else value
    (root / "annotations.json").write_text(json.dumps(data))
    return root / "annotations.json"


def yolo_lines(image, boxes, label=0) -> str:
    h, w = image.shape[:2]
    return "".join(f"{label} {(x1 + x2) / 2 / w!r} {(y1 + y2) / 2 / h!r} {(x2 - x1) / w!r} {(y2 - y1) / h!r}\n"
                   for x1, y1, x2, y2 in boxes.astype(np.float64).tolist())


def write_yolo(root: Path, items, split: str | None = "train") -> Path:
    """Ultralytics ``images/<split>`` + ``labels/<split>`` (``split=None``: a plain folder of pairs)."""
    images = root / "images" / split if split else root
    labels = root / "labels" / split if split else root
    write_images(images, items)
    labels.mkdir(parents=True, exist_ok=True)
    for name, image, boxes in items:
        (labels / name).with_suffix(".txt").write_text(yolo_lines(image, boxes))
    return root


def voc_xml(name, image, objects) -> str:
    """``objects``: ``[(class name, xyxy px box, difficult)]``, written 1-based as the devkit does."""
    text = "".join(
        f"<object><name>{label}</name><difficult>{int(difficult)}</difficult><bndbox><xmin>{x1 + 1!r}</xmin>"
        f"<ymin>{y1 + 1!r}</ymin><xmax>{x2!r}</xmax><ymax>{y2!r}</ymax></bndbox></object>"
        for label, (x1, y1, x2, y2), difficult in objects)
    return (f"<annotation><filename>{name}</filename><size><width>{image.shape[1]}</width>"
            f"<height>{image.shape[0]}</height><depth>3</depth></size>{text}</annotation>")


def write_voc(root: Path, items) -> Path:
    write_images(root, items)
    for name, image, boxes in items:
        objects = [("face", box, False) for box in boxes.astype(np.float64).tolist()]
        (root / name).with_suffix(".xml").write_text(voc_xml(name, image, objects))
    return root


def imglab_xml(items, box_attrs=None) -> str:
    images = ""
    for name, _, boxes in items:
        rows = "".join(f"<box top='{y1!r}' left='{x1!r}' width='{x2 - x1!r}' height='{y2 - y1!r}'/>"
                       for x1, y1, x2, y2 in boxes.astype(np.float64).tolist())
        images += f"<image file='{name}'>{rows}{box_attrs or ''}</image>"
    return f"<?xml version='1.0'?><dataset><name>faces</name><images>{images}</images></dataset>"


def write_imglab(root: Path, items) -> Path:
    write_images(root, items)
    (root / "training.xml").write_text(imglab_xml(items))
    return root / "training.xml"


def write_format(fmt: str, root: Path, items):
    """Write ``items`` in ``fmt``; return the source that reads them."""
    if fmt == "coco":
        return CocoFaces(write_coco(root, items))
    if fmt == "yolo":
        return YoloTxtFaces(write_yolo(root, items), split="train")
    if fmt == "yolo_plain":
        return YoloTxtFaces(write_yolo(root, items, split=None))
    if fmt == "voc":
        return VocFaces(write_voc(root, items))
    return ImglabFaces(write_imglab(root, items))


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(fmt, drawn, tmp_path):
    source = write_format(fmt, tmp_path, drawn)
    assert len(source) == N_IMAGES and source.report.skipped_records == 0
    assert source.report.faces == sum(len(b) for *_, b in drawn)
    for i, (name, image, boxes) in enumerate(drawn):
        got_image, got_boxes = source[i]
        assert source.image_path(i).name == name
        assert got_image.dtype == np.uint8 and np.array_equal(got_image, image)
        assert got_boxes.dtype == np.float32 and got_boxes.shape == boxes.shape
        np.testing.assert_allclose(got_boxes, boxes, atol=1e-3)


def test_voc_is_one_based_and_inclusive(drawn, tmp_path):
    write_images(tmp_path, drawn[:1])
    name, image, _ = drawn[0]
    xml = voc_xml(name, image, [("face", (0, 0, 1, 1), False)])  # writes xmin=1 ymin=1 xmax=1 ymax=1
    (tmp_path / "a.xml").write_text(xml)
    assert "<xmin>1</xmin>" in (tmp_path / "a.xml").read_text()
    np.testing.assert_allclose(VocFaces(tmp_path)[0][1], [[0, 0, 1, 1]])


def test_voc_devkit_layout(drawn, tmp_path):
    write_images(tmp_path / "JPEGImages", drawn)
    (tmp_path / "Annotations").mkdir()
    for name, image, boxes in drawn:
        (tmp_path / "Annotations" / name).with_suffix(".xml").write_text(
            voc_xml(name, image, [("face", b, False) for b in boxes.astype(np.float64).tolist()]))
    source = VocFaces(tmp_path)
    assert len(source) == N_IMAGES
    np.testing.assert_allclose(source[1][1], drawn[1][2], atol=1e-3)


# (format, how to break the first entry, the words the error must hold: file and entry)
MALFORMED = [
    ("coco", lambda d: d["annotations"][0].update(bbox=[1, 2]),
     "annotations.json: annotations[0] (id 1): bbox must be 4 numbers, got [1, 2]"),
    ("coco", lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), "annotations[0] (id 1): bbox has a negative"),
    ("coco", lambda d: d["annotations"][0].update(image_id=99), "annotations[0] (id 1): image_id 99 is not in"),
    ("coco", lambda d: d["images"][0].pop("file_name"), "annotations.json: images[0] (id 1): an image needs"),
    ("yolo", "0 0.5 0.5 0.1\n", "img0.txt:1: expected 5 fields"),
    ("yolo", "face 0.5 0.5 0.1 0.1\n", "img0.txt:1: expected an integer class"),
    ("yolo", "0 0.5 0.5 12 30\n", "img0.txt:1: coordinates must be image-normalised"),
    ("voc", ("<xmin>", "<xmin>x"), "img0.xml: object[0]: xmin must be a number"),
    ("voc", ("<filename>img0.png", "<filename>"), "img0.xml: no <filename>"),
    ("voc", ("</annotation>", ""), "img0.xml: not well-formed XML"),
    ("imglab", ("width='", "width='w"), "training.xml: images/image[0] (img0.png) box[0]: width must be a number"),
    ("imglab", ("file='img0.png'", ""), "training.xml: images/image[0]: no file attribute"),
]


def write_malformed(fmt, breaker, root: Path, items) -> Path:
    """Write ``items`` in ``fmt`` with its first entry broken; return what the reader opens."""
    if fmt == "coco":
        path = write_coco(root, items)
        data = json.loads(path.read_text())
        breaker(data)
        path.write_text(json.dumps(data))
        return path
    if fmt == "yolo":
        write_yolo(root, items, split=None)
        (root / "img0.txt").write_text(breaker)
        return root
    if fmt == "voc":
        write_voc(root, items)
        (root / "img0.xml").write_text((root / "img0.xml").read_text().replace(*breaker, 1))
        return root
    path = write_imglab(root, items)
    path.write_text(path.read_text().replace(*breaker, 1))
    return path


@pytest.mark.parametrize("fmt, breaker, message", MALFORMED)
def test_malformed_entry_raises_naming_file_and_entry_or_is_a_counted_skip(fmt, breaker, message, drawn, tmp_path):
    path = write_malformed(fmt, breaker, tmp_path, drawn)
    with pytest.raises(FormatError, match=re.escape(message)):
        open_labelled(fmt, path if fmt != "yolo" else None, path if fmt == "yolo" else None)
    source = open_labelled(fmt, path if fmt != "yolo" else None, path if fmt == "yolo" else None, on_error="skip")
    assert source.report.skipped_records == 1 and message.split(":")[0] in source.report.messages[0]
    if "image_id 99" in message:  # which image lost a face is unknown: the others are kept
        assert len(source) == N_IMAGES and source.report.faces == sum(len(b) for *_, b in drawn) - 1
    else:  # the entry's image is skipped with it
        assert len(source) == N_IMAGES - 1 and "img0.png" not in [r.path.name for r in source.records]
    assert "1 malformed records skipped" in str(source.report)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_missing_or_truncated_image_raises_naming_it_or_is_a_counted_skip(fmt, damage, drawn, tmp_path):
    items = [(name.replace(".png", ".jpg"), image, boxes) for name, image, boxes in drawn]
    source = write_format(fmt, tmp_path, items)
    path = source.image_path(1)
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    error = FileNotFoundError if damage == "missing" else OSError
    with pytest.raises(error, match=r"img1\.jpg"):
        type(source).__init__(type(source).__new__(type(source)), *_args(fmt, tmp_path))
    again = type(source).__new__(type(source))
    type(source).__init__(again, *_args(fmt, tmp_path), on_error="skip")
    assert len(again) == N_IMAGES - 1
    assert again.report.dropped["missing_image" if damage == "missing" else "damaged_image"] == 1


def _args(fmt, root):
    return {"coco": (root / "annotations.json",), "yolo": (root, "train"), "yolo_plain": (root,),
            "voc": (root,), "imglab": (root / "training.xml",)}[fmt]


def test_coco_edge_cases(drawn, tmp_path):
    name, image, _ = drawn[0]
    boxes = np.array([[-5, 10, 10, 20],   # crosses the left border: clipped to x1 = 0
                      [10, 10, 10, 30],   # zero width: dropped
                      [70, 70, 90, 90],   # wholly outside the 64 x 64 image: dropped
                      [20, 20, 30, 30]], dtype=np.float32)
    items = [(name, image, boxes), ("empty.png", image, np.zeros((0, 4), np.float32))]
    extra = {"categories": [{"id": 2, "name": "hand"}],
             "annotations": [{"id": 90, "image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5]},
                             {"id": 91, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 1},
                             {"id": 92, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "ignore": 1}]}
    path = write_coco(tmp_path, items, extra)
    with pytest.raises(FormatError, match=r"annotations.json: 2 categorys \[1, 2\]|choose the face"):
        CocoFaces(path)
    with pytest.raises(FormatError, match=r"no category 'cat'; the categories are \['1: face', '2: hand'\]"):
        CocoFaces(path, category="cat")
    source = CocoFaces(path, category="face")
    assert CocoFaces(path, category=1).report.faces == CocoFaces(path, category="1").report.faces == 2
    np.testing.assert_allclose(source[0][1], [[0, 10, 10, 20], [20, 20, 30, 30]])
    assert source[1][1].shape == (0, 4) and len(source) == 2
    dropped = source.report.dropped
    assert (dropped["other_class"], dropped["crowd"], dropped["ignore"]) == (1, 1, 1)
    assert (dropped["degenerate"], dropped["outside"], source.report.clipped) == (1, 1, 1)
    assert CocoFaces(path, category="hand").report.faces == 1


def test_yolo_classes_empty_labels_and_clipping(drawn, tmp_path):
    write_yolo(tmp_path, drawn[:2], split=None)
    (tmp_path / "img0.txt").write_text("0 0.5 0.5 0.25 0.25\n1 0.5 0.5 0.1 0.1\n0 0.0 0.5 0.5 0.5\n0 0.5 0.5 0 0.1\n")
    (tmp_path / "img1.txt").unlink()  # no label file: a background image
    with pytest.raises(FormatError, match=r"2 class ids \[0, 1\]"):
        YoloTxtFaces(tmp_path)
    source = YoloTxtFaces(tmp_path, class_ids=0)
    np.testing.assert_allclose(source[0][1], [[24, 24, 40, 40], [0, 16, 16, 48]], atol=1e-4)
    assert source[1][1].shape == (0, 4)
    report = source.report
    assert (report.dropped["other_class"], report.dropped["degenerate"], report.clipped) == (1, 1, 1)


def test_voc_and_imglab_flags(drawn, tmp_path):
    name, image, _ = drawn[0]
    write_images(tmp_path, drawn[:1])
    objects = [("face", (1, 1, 9, 9), False), ("face", (2, 2, 8, 8), True), ("person", (0, 0, 30, 60), False)]
    (tmp_path / "img0.xml").write_text(voc_xml(name, image, objects))
    with pytest.raises(FormatError, match=r"class names \['face', 'person'\]"):
        VocFaces(tmp_path)
    source = VocFaces(tmp_path, class_names="face")
    np.testing.assert_allclose(source[0][1], [[1, 1, 9, 9]])
    assert (source.report.dropped["difficult"], source.report.dropped["other_class"]) == (1, 1)
    xml = tmp_path / "faces.xml"
    xml.write_text(imglab_xml(drawn[:1], "<box top='1' left='2' width='3' height='4' ignore='1'/>"))
    imglab = ImglabFaces(xml)
    assert imglab.report.dropped["ignore"] == 1 and len(imglab[0][1]) == len(drawn[0][2])


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc", "imglab"])
def test_datamodule_reads_each_format(fmt, drawn, tmp_path):
    write_format(fmt, tmp_path, drawn)
    module = FaceDataModule(fmt, root=tmp_path if fmt in ("yolo", "coco") else tmp_path, image_size=64,
                            batch_size=2, augment=False)
    images, boxes = next(iter(module.train_dataloader()))
    assert images.shape == (2, 3, 64, 64) and len(boxes) == 2
    images, boxes = next(iter(module.val_dataloader()))
    np.testing.assert_allclose(boxes[0].numpy(), drawn[0][2], atol=1e-3)  # 64 px images: no resize
    assert len(module.val_dataloader().dataset) == N_IMAGES


def test_datamodule_needs_a_root_for_own_data():
    with pytest.raises(ValueError, match="'coco' needs root"):
        FaceDataModule("coco")


@pytest.fixture(scope="module")
def trained_on_coco(drawn, tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    write_coco(root / "data", drawn)
    status = main(["train", "--config", "configs/smoke.yaml", "--data.dataset", "coco", "--data.root",
                   str(root / "data"), "--trainer.max_epochs", "1", "--threads", "1",
                   "--output_dir", str(root / "run")])
    assert status == 0
    return root


def test_train_on_coco(trained_on_coco):
    assert (trained_on_coco / "run" / "checkpoints" / "last.ckpt").exists()
    assert "dataset: coco" in (trained_on_coco / "run" / "config.yaml").read_text()


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc", "imglab"])
def test_evaluate_on_own_data(fmt, trained_on_coco, drawn, tmp_path, capsys):
    write_format(fmt, tmp_path, drawn)
    flags = {"coco": ["--annotations", str(tmp_path / "annotations.json"), "--images", str(tmp_path / "images")],
             "yolo": ["--images", str(tmp_path), "--split", "train"],
             "voc": ["--annotations", str(tmp_path)],
             "imglab": ["--annotations", str(tmp_path / "training.xml")]}[fmt]
    status = main(["evaluate", str(trained_on_coco / "run" / "checkpoints" / "last.ckpt"), "--dataset", fmt,
                   *flags])
    out = capsys.readouterr().out
    assert status == 0, out
    metrics = json.loads(out)
    assert metrics["num_images"] == N_IMAGES and metrics["num_faces"] == sum(len(b) for *_, b in drawn)
    assert 0 <= metrics["ap50"] <= 1


def test_evaluate_names_a_malformed_entry(trained_on_coco, drawn, tmp_path, capsys):
    path = write_malformed("coco", MALFORMED[0][1], tmp_path, drawn)
    status = main(["evaluate", str(trained_on_coco / "run" / "checkpoints" / "last.ckpt"), "--dataset", "coco",
                   "--annotations", str(path), "--images", str(tmp_path / "images")])
    assert status == 2
    assert "annotations.json: annotations[0] (id 1): bbox must be 4 numbers" in capsys.readouterr().err
