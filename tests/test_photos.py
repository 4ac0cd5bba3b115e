"""read_image: the one reader; truncated or damaged JPEG and PNG files are refused, naming the file."""

import cv2
import numpy as np
import pytest

from scratchdet.data.photos import check_complete, read_image, sample_photos


def test_reads_rgb(tmp_path):
    image = np.zeros((8, 12, 3), np.uint8)
    image[..., 0] = 255  # red
    assert cv2.imwrite(str(tmp_path / "red.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    check_complete((tmp_path / "red.png").read_bytes())
    np.testing.assert_array_equal(read_image(tmp_path / "red.png"), image)


def test_sample_photo_reads_and_its_truncation_is_refused(tmp_path):
    data = sample_photos()[0].read_bytes()
    assert read_image(sample_photos()[0]).shape == (600, 512, 3)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    assert cv2.imread(str(cut)) is not None  # OpenCV alone would decode it (with a warning)
    with pytest.raises(OSError, match=r"truncated or damaged JPEG .*cut.jpg: .*FF D9"):
        read_image(cut)
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(data + b"\x00" * 16)  # some writers pad after the EOI marker
    assert read_image(padded).shape == (600, 512, 3)


def test_truncated_png_is_refused(tmp_path):
    ok, png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (tmp_path / "whole.png").write_bytes(png.tobytes())
    assert read_image(tmp_path / "whole.png").shape == (40, 40, 3)
    (tmp_path / "cut.png").write_bytes(png.tobytes()[: len(png) * 6 // 10])
    with pytest.raises(OSError, match=r"truncated or damaged PNG .*cut.png"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("content, error, match", [
    (None, FileNotFoundError, r"image not found: .*x.jpg"),
    (b"not an image", OSError, r"could not read image .*x.jpg: not an image file or corrupt"),
    (b"\xff\xd8\xff\xe0 header only", OSError, r"truncated or damaged JPEG .*x.jpg"),
])
def test_errors_name_the_file(tmp_path, content, error, match):
    if content is not None:
        (tmp_path / "x.jpg").write_bytes(content)
    with pytest.raises(error, match=match):
        read_image(tmp_path / "x.jpg")
