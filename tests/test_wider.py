"""WIDER FACE reader: a tiny fixture in the official file format, written here."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from scratchdet.data.wider import (  # noqa: E402
    ATTRIBUTES,
    WiderFace,
    WiderFormatError,
    download_wider,
    file_md5,
    find_wider_root,
    parse_wider_annotations,
    parse_wider_filelist,
)

IMAGE_HW = (80, 120)
RED_RGB = (255, 0, 0)
# x1 y1 w h blur expression illumination invalid occlusion pose
TRAIN_GT = """\
0--Parade/0_Parade_marchingband_1_1.jpg
3
10 20 30 40 0 0 0 0 0 0
50 30 20 25 2 1 0 1 0 0
70 10 0 12 0 0 0 0 0 0
1--Handshaking/1_Handshaking_1.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Handshaking/1_Handshaking_2.jpg
3
5 5 10 10 1 0 1 0 2 1
110 50 20 20 0 1 0 0 1 0
130 10 5 5 0 0 0 0 0 0
"""
VAL_GT = """\
2--Demonstration/2_Demonstration_1.jpg
1
30 30 40 40 0 0 0 0 0 0
"""
TEST_LIST = "3--Riot/3_Riot_1.jpg\n3--Riot/3_Riot_2.jpg\n"


def _paths(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.endswith(".jpg")]


def write_fixture(root: Path) -> Path:
    """Write the official layout under ``root``: annotations and small JPEGs."""
    split_dir = root / "wider_face_split"
    split_dir.mkdir(parents=True)
    (split_dir / "wider_face_train_bbx_gt.txt").write_text(TRAIN_GT)
    (split_dir / "wider_face_val_bbx_gt.txt").write_text(VAL_GT)
    (split_dir / "wider_face_test_filelist.txt").write_text(TEST_LIST)
    image = np.zeros((*IMAGE_HW, 3), np.uint8)
    image[:] = RED_RGB[::-1]  # OpenCV writes BGR
    for split, text in (("train", TRAIN_GT), ("val", VAL_GT), ("test", TEST_LIST)):
        for rel in _paths(text):
            path = root / f"WIDER_{split}" / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), image)
    return root


@pytest.fixture
def wider_root(tmp_path: Path) -> Path:
    return write_fixture(tmp_path / "wider")


def test_parse_boxes_and_flags(wider_root: Path) -> None:
    records, report = parse_wider_annotations(wider_root / "wider_face_split/wider_face_train_bbx_gt.txt")
    assert [r.path for r in records] == _paths(TRAIN_GT)
    assert (report.records, report.faces, report.skipped_records) == (3, 6, 0)
    np.testing.assert_array_equal(records[0].boxes, [[10, 20, 30, 40], [50, 30, 20, 25], [70, 10, 0, 12]])
    assert records[0].boxes.dtype == np.float32
    # official column order: blur expression illumination invalid occlusion pose
    expected = {"blur": [1, 0, 0], "expression": [0, 1, 0], "illumination": [1, 0, 0],
                "invalid": [0, 0, 0], "occlusion": [2, 1, 0], "pose": [1, 0, 0]}
    for name in ATTRIBUTES:
        np.testing.assert_array_equal(records[2].attributes[name], expected[name])
    assert records[0].attributes["invalid"].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(records[0].boxes_xyxy()[0], [10, 20, 40, 60])
    assert records[2].event == "1--Handshaking"


def test_zero_face_record_is_empty(wider_root: Path) -> None:
    records, _ = parse_wider_annotations(wider_root / "wider_face_split/wider_face_train_bbx_gt.txt")
    empty = records[1]
    assert empty.boxes.shape == (0, 4)
    assert all(empty.attributes[name].shape == (0,) for name in ATTRIBUTES)


def test_zero_face_record_without_placeholder(tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text("a--A/a.jpg\n0\nb--B/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    records, _ = parse_wider_annotations(path)
    assert [len(r.boxes) for r in records] == [0, 1]


def test_source_drops_invalid_degenerate_and_outside(wider_root: Path) -> None:
    source = WiderFace(wider_root, "train")
    assert len(source) == 3
    image, boxes = source[0]
    assert image.shape == (*IMAGE_HW, 3) and image.dtype == np.uint8
    assert image[..., 0].mean() > 200 and image[..., 2].mean() < 50  # RGB, not BGR
    np.testing.assert_array_equal(boxes, [[10, 20, 40, 60]])
    assert source[1][1].shape == (0, 4)
    _, boxes = source[2]  # the second box is clipped to the width, the third lies outside
    np.testing.assert_array_equal(boxes, [[5, 5, 15, 15], [110, 50, 120, 70]])
    assert boxes.dtype == np.float32
    assert source.report.dropped == {"invalid": 1, "degenerate": 1, "small": 0, "outside": 1}
    assert source.meta(2)["attributes"]["occlusion"].tolist() == [2, 1, 0]


def test_keep_invalid_and_min_face_size(wider_root: Path) -> None:
    kept = WiderFace(wider_root, keep_invalid=True)[0][1]
    np.testing.assert_array_equal(kept, [[10, 20, 40, 60], [50, 30, 70, 55]])
    source = WiderFace(wider_root, min_face_size=15)
    np.testing.assert_array_equal(source[2][1], [[110, 50, 120, 70]])
    assert source.report.dropped["small"] == 2  # 10 x 10 and 5 x 5


def test_val_and_test_splits(wider_root: Path) -> None:
    np.testing.assert_array_equal(WiderFace(wider_root, "val")[0][1], [[30, 30, 70, 70]])
    test = WiderFace(wider_root, "test")
    assert len(test) == 2 and test[1][1].shape == (0, 4)
    records = parse_wider_filelist(wider_root / "wider_face_split/wider_face_test_filelist.txt")
    assert [r.path for r in records] == _paths(TEST_LIST)


def test_torchvision_layout(tmp_path: Path) -> None:
    write_fixture(tmp_path / "widerface")
    assert find_wider_root(tmp_path) == tmp_path / "widerface"
    np.testing.assert_array_equal(WiderFace(tmp_path)[0][1], [[10, 20, 40, 60]])


def test_matches_torchvision_widerface(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    write_fixture(tmp_path / "widerface")
    theirs = torchvision.datasets.WIDERFace(str(tmp_path), split="train", download=False)
    ours = WiderFace(tmp_path, "train")
    assert len(theirs) == len(ours.records)
    for k, record in enumerate(ours.records):
        info = theirs.img_info[k]
        assert Path(info["img_path"]) == ours.image_path(k).resolve()
        target = info["annotations"]
        if len(record.boxes) == 0:  # torchvision reports an empty image as one zero box
            assert target["bbox"].tolist() == [[0, 0, 0, 0]]
            continue
        np.testing.assert_array_equal(target["bbox"].numpy(), record.boxes)
        for name in ("blur", "expression", "illumination"):
            np.testing.assert_array_equal(target[name].numpy(), record.attributes[name])
        # torchvision names the last three columns occlusion, pose, invalid; the
        # official readme (and we) call them invalid, occlusion, pose.
        for theirs_name, ours_name in (("occlusion", "invalid"), ("pose", "occlusion"), ("invalid", "pose")):
            np.testing.assert_array_equal(target[theirs_name].numpy(), record.attributes[ours_name])


MALFORMED = [
    ("a--A/a.jpg\n1\n1 2 3 4 0 0 0 0 0\n", 3, "expected 10 fields"),
    ("a--A/a.jpg\n1\n1 2 x 4 0 0 0 0 0 0\n", 3, "expected 10 numbers"),
    ("a--A/a.jpg\n3\n1 2 3 4 0 0 0 0 0 0\n", 2, "count 3 .* only 1 lines follow"),
    ("a--A/a.jpg\n1\n1 2 -3 4 0 0 0 0 0 0\n", 3, "negative width or height"),
    ("a--A/a.jpg\nmany\n1 2 3 4 0 0 0 0 0 0\n", 2, "expected a face count"),
    ("a--A/a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n7\n", 4, "expected an image path"),
    ("a--A/a.jpg\n", 2, "missing the face count"),
]


@pytest.mark.parametrize("text, line, message", MALFORMED)
def test_malformed_lines_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "gt.txt"
    path.write_text(text)
    with pytest.raises(WiderFormatError, match=f"gt.txt:{line}: .*{message}"):
        parse_wider_annotations(path)


def test_skip_counts_malformed_records(tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text(
        "a--A/a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n"
        "b--B/b.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n1 2 oops 4 0 0 0 0 0 0\n"
        "c--C/c.jpg\n1\n5 6 7 8 0 0 0 0 0 0\n"
    )
    records, report = parse_wider_annotations(path, on_error="skip")
    assert [r.path for r in records] == ["a--A/a.jpg", "c--C/c.jpg"]
    assert report.skipped_records == 1 and report.faces == 2
    assert len(report.messages) == 1 and "gt.txt:7: expected 10 numbers" in report.messages[0]
    assert "1 malformed records skipped" in str(report)


def test_missing_image_raises_or_is_skipped(wider_root: Path) -> None:
    missing = wider_root / "WIDER_train/images/1--Handshaking/1_Handshaking_1.jpg"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="1_Handshaking_1.jpg"):
        WiderFace(wider_root)[1]
    source = WiderFace(wider_root, on_error="skip")
    assert len(source) == 2 and source.report.dropped["missing_image"] == 1


def test_corrupt_image_raises(wider_root: Path) -> None:
    (wider_root / "WIDER_val/images/2--Demonstration/2_Demonstration_1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match="could not read image .*2_Demonstration_1.jpg"):
        WiderFace(wider_root, "val")[0]


def test_truncated_image_raises_or_is_a_counted_skip(wider_root: Path) -> None:
    path = wider_root / "WIDER_train/images/1--Handshaking/1_Handshaking_1.jpg"
    data = path.read_bytes()
    assert data[:2] == b"\xff\xd8" and data.endswith(b"\xff\xd9")  # the fixture is a whole JPEG
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(OSError, match="truncated .*1_Handshaking_1.jpg"):
        WiderFace(wider_root)[1]
    source = WiderFace(wider_root, on_error="skip")
    assert len(source) == 2 and source.report.dropped["damaged_image"] == 1
    assert "damaged_image=1" in str(source.report)


def test_bad_arguments(wider_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="looked for .*wider_face_split.*widerface"):
        find_wider_root(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split must be one of"):
        WiderFace(wider_root, "training")
    with pytest.raises(ValueError, match="on_error must be"):
        WiderFace(wider_root, on_error="ignore")
    with pytest.raises(ValueError, match="min_face_size"):
        WiderFace(wider_root, min_face_size=-1)
    with pytest.raises(IndexError, match="out of range"):
        WiderFace(wider_root)[3]


def _zip_of(folder: Path, archive: Path) -> str:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return file_md5(archive)


def test_file_md5(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"scratchdet" * 1000)
    assert file_md5(path, chunk_size=7) == hashlib.md5(b"scratchdet" * 1000).hexdigest()


def test_download_offline_fails_with_one_clear_message(tmp_path: Path) -> None:
    files = {"wider_face_split.zip": ("http://127.0.0.1:9/x.zip", None)}
    with pytest.raises(RuntimeError, match="could not download wider_face_split.zip .*no network.*manually"):
        download_wider(tmp_path, splits=(), files=files, timeout=5)
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_download_checks_md5_and_extracts(wider_root: Path, tmp_path: Path) -> None:
    source = tmp_path / "server" / "wider_face_split.zip"
    source.parent.mkdir()
    md5 = _zip_of(wider_root / "wider_face_split", source)
    dest = tmp_path / "dest"
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        download_wider(dest, splits=(), files={"wider_face_split.zip": (source.as_uri(), "0" * 32)})
    download_wider(dest, splits=(), files={"wider_face_split.zip": (source.as_uri(), md5)})
    assert (dest / "wider_face_split/wider_face_train_bbx_gt.txt").read_text() == TRAIN_GT


def test_download_reuses_valid_archive_and_skips_extracted(wider_root: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    md5 = _zip_of(wider_root / "WIDER_val", dest / "WIDER_val.zip")
    unreachable = {"WIDER_val.zip": ("http://127.0.0.1:9/x.zip", md5)}
    download_wider(dest, splits=("val",), annotations=False, files=unreachable)  # no fetch: valid archive
    assert (dest / "WIDER_val/images/2--Demonstration/2_Demonstration_1.jpg").is_file()
    (dest / "WIDER_val.zip").unlink()
    download_wider(dest, splits=("val",), annotations=False, files=unreachable)  # folder exists: skipped
    with pytest.raises(ValueError, match="splits must be among"):
        download_wider(dest, splits=("training",))
