"""Drawing helpers (scratchdet.viz)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from scratchdet.viz import GREEN, RED, draw_boxes, draw_grid, drawn_boxes, plot_boxes, plot_curves, show_images, to_numpy_image


def test_to_numpy_image_from_tensor_and_array():
    t = torch.zeros(3, 8, 6)
    t[0] = 1.0
    img = to_numpy_image(t)
    assert img.shape == (8, 6, 3) and img.dtype == np.uint8 and img[0, 0].tolist() == [255, 0, 0]
    gray = to_numpy_image(np.full((4, 4), 0.5, np.float32))
    assert gray.shape == (4, 4, 3) and gray[0, 0, 0] == 128
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        to_numpy_image(torch.zeros(5, 4, 4))


def test_draw_boxes_draws_on_a_copy():
    image = np.zeros((50, 50, 3), np.uint8)
    out = draw_boxes(image, torch.tensor([[10.0, 10.0, 40.0, 40.0]]), scores=torch.tensor([0.9]))
    assert image.sum() == 0, "input must not be modified"
    r, g, b = out[10, 25].tolist()
    assert g > 150 and r == 0 and b < g / 2  # top edge drawn in green (anti-aliased)
    assert out[25, 25].sum() == 0  # inside untouched
    with pytest.raises(ValueError, match="1 boxes but 2 scores"):
        draw_boxes(image, torch.tensor([[1.0, 1.0, 5.0, 5.0]]), scores=[0.1, 0.2])


def test_draw_boxes_outlines_each_box_in_black_so_it_reads_on_any_scene():
    grass = np.full((60, 60, 3), (0, 230, 60), np.uint8)  # a background the colour of the boxes
    out = draw_boxes(grass, [[20.0, 20.0, 40.0, 40.0]], thickness=1)
    assert out[20, 30, 1] > 150 and out[20, 30, 0] == 0  # the box line (anti-aliased)
    assert out[18, 30].sum() < 60 and out[22, 30].sum() < 60  # black on both sides of it
    assert out[30, 30].tolist() == [0, 230, 60] and out[5, 5].tolist() == [0, 230, 60]  # elsewhere untouched
    column = draw_boxes(np.zeros((256, 256, 3), np.uint8), [[50.0, 50.0, 150.0, 150.0]], halo=False)[:, 100, 1]
    assert (column[40:60] > 150).sum() >= 2  # the default line is at least 2 px wide on a 256 px image
    plain = draw_boxes(grass, [[20.0, 20.0, 40.0, 40.0]], halo=False)
    assert (plain == grass).all()  # without the halo the box vanishes on its own colour


def test_draw_grid_shades_cells():
    out = draw_grid(np.zeros((40, 40, 3), np.uint8), 4, cells=np.eye(4, dtype=bool))
    assert out[5, 5].sum() > 0 and out[5, 25].sum() == 0
    assert out[5, 5, 0] >= 0.5 * 255 - 1  # half-opaque yellow: visible on a dark scene
    assert out[0, 5].tolist() == [255, 220, 0] and out[1, 5].sum() == 0  # its own border, outlined in black
    with pytest.raises(ValueError, match=r"shape \(4, 4\)"):
        draw_grid(np.zeros((40, 40, 3), np.uint8), 4, cells=np.eye(3, dtype=bool))


def test_figures():
    fig = show_images([np.zeros((8, 8, 3), np.uint8)] * 3, titles=["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 4
    fig = plot_curves({"loss": [3.0, 2.0, 1.0]})
    assert fig.axes[0].get_legend() is not None
    with pytest.raises(ValueError, match="at least one image"):
        show_images([])


def test_plot_boxes_round_trips_through_drawn_boxes():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.imshow(np.zeros((64, 96, 3), np.uint8))
    faces = torch.tensor([[10.0, 12.0, 30.5, 40.0], [50.0, 5.0, 90.0, 60.0]])
    detections = torch.tensor([[11.0, 12.0, 31.0, 41.0]])
    plot_boxes(ax, faces, RED)
    plot_boxes(ax, detections, GREEN, scores=torch.tensor([0.875]))
    assert torch.equal(drawn_boxes(ax, RED), faces)  # in drawing order, per colour, exactly
    torch.testing.assert_close(drawn_boxes(ax, GREEN, dtype=torch.float64), detections.double())
    assert drawn_boxes(ax, (1, 2, 3)).shape == (0, 4)
    assert [t.get_text() for t in ax.texts] == ["0.88"]
    # a box's edges are pixel edges: pixel 10 spans [9.5, 10.5] in imshow's coordinates
    assert ax.patches[0].get_x() == 9.5 and ax.patches[0].get_width() == 20.5
    with pytest.raises(ValueError, match="1 boxes but 2 scores"):
        plot_boxes(ax, detections, GREEN, scores=[0.1, 0.2])
    plt.close(fig)
