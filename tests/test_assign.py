"""Target assignment of the multi-scale head (assign.py) against a loop over faces and cells."""

import math

import pytest
import torch

from scratchdet.assign import assign_levels, face_levels, unassigned_share
from scratchdet.config import DetectorConfig

FPN = DetectorConfig(head="fpn")  # 256 px, strides 8, 16, 32


def loop_assign(boxes, config, input_hw=None):
    """The rules of assign.py, one face and one cell at a time."""
    height, width = (config.image_size,) * 2 if input_hw is None else input_hw
    faces = [b.tolist() for image in boxes for b in image]
    owners = [(i, j) for i, image in enumerate(boxes) for j in range(len(image))]
    grids = []
    for k, stride in enumerate(config.strides):
        rows, cols = height // stride, width // stride
        grid = [[[-1] * cols for _ in range(rows)] for _ in boxes]
        best = {}
        for f, (x1, y1, x2, y2) in enumerate(faces):
            size = math.sqrt(max(x2 - x1, 0) * max(y2 - y1, 0))
            level = sum(size >= s * config.level_size for s in config.strides[:-1])
            if level != k:
                continue
            cx, cy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
            r0, c0 = min(max(math.floor(cy), 0), rows - 1), min(max(math.floor(cx), 0), cols - 1)
            for r in range(rows):
                for c in range(cols):
                    dx, dy = abs(c + 0.5 - cx), abs(r + 0.5 - cy)
                    near = abs(r - r0) <= int(config.center_radius) and abs(c - c0) <= int(config.center_radius)
                    if (r, c) != (r0, c0) and not (near and dx < config.center_radius and dy < config.center_radius):
                        continue
                    key = (owners[f][0], r, c)
                    rank = (dx * dx + dy * dy, (x2 - x1) * (y2 - y1), f)
                    if key not in best or rank < best[key][0]:
                        best[key] = (rank, f)
        for (i, r, c), (_, f) in best.items():
            grid[i][r][c] = f
        grids.append(torch.tensor(grid).reshape(len(boxes), rows, cols))
    return grids


def random_faces(generator, n_images=3, max_faces=25, size=256, crowd=False):
    out = []
    for _ in range(n_images):
        m = int(torch.randint(0, max_faces + 1, (1,), generator=generator))
        wh = torch.exp(torch.rand(m, 2, generator=generator) * math.log(size / 6)) + 4  # 4 px .. size / 6
        if crowd:  # many faces packed in one corner
            wh = wh.clamp(max=20)
            xy = torch.rand(m, 2, generator=generator) * 60
        else:
            xy = torch.rand(m, 2, generator=generator) * (size - wh)
        out.append(torch.cat([xy, xy + wh], 1).clamp(0, size))
    return out


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("config", [FPN, DetectorConfig(head="fpn", center_radius=0.0),
                                    DetectorConfig(head="fpn", center_radius=1.5, level_size=2.0),
                                    DetectorConfig(head="fpn", num_levels=1)])
def test_assignment_matches_the_loop(seed, config):
    boxes = random_faces(torch.Generator().manual_seed(seed), crowd=seed % 2 == 1)
    got = assign_levels(boxes, config)
    for level, (a, b) in enumerate(zip(got.cells, loop_assign(boxes, config))):
        assert torch.equal(a, b), f"level {level}"


def test_non_square_input():
    boxes = random_faces(torch.Generator().manual_seed(3), size=256)
    got = assign_levels(boxes, FPN, input_hw=(256, 384))
    assert [tuple(g.shape[1:]) for g in got.cells] == [(32, 48), (16, 24), (8, 12)]
    for a, b in zip(got.cells, loop_assign(boxes, FPN, (256, 384))):
        assert torch.equal(a, b)


def test_levels_by_face_size():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 23.9, 24], [0, 0, 24, 24], [0, 0, 47, 47], [0, 0, 48, 48],
                          [0, 0, 200, 100]], dtype=torch.float32)
    assert face_levels(boxes, FPN).tolist() == [0, 0, 1, 1, 2, 2]


def test_neighbour_cells_are_positives_and_crowds_keep_their_centres():
    # one 12 px face centred at (10.5, 10.5) on the stride-8 level: its cell (1, 1) and the neighbours
    # whose centres are within one cell: (0, 0), (0, 1), (1, 0)
    face = torch.tensor([[4.5, 4.5, 16.5, 16.5]])
    grid = assign_levels([face], FPN).cells[0][0]
    assert sorted(map(tuple, (grid >= 0).nonzero().tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # two faces whose centres are 9 px apart each keep the cell of their own centre
    two = torch.tensor([[0.0, 0.0, 12.0, 12.0], [9.0, 0.0, 21.0, 12.0]])
    grid = assign_levels([two], FPN).cells[0][0]
    assert grid[0, 0] == 0 and grid[0, 1] == 1


def test_no_face_is_lost_in_a_crowd():
    # a crowd: 12 x 12 faces of 10 px on a 12 px pitch (SynthFaces' crowds are sparser)
    xy = torch.stack(torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij"), -1).reshape(-1, 2) * 12 + 20
    crowd = torch.cat([xy, xy + 10], 1)
    shares = unassigned_share(assign_levels([crowd], FPN))
    assert shares == {"all": 0.0, "level_0": 0.0, "level_1": 0.0, "level_2": 0.0}
    # on one 8 x 8 grid (stride 32, v1's) most of it is never a target
    single = unassigned_share(assign_levels([crowd], DetectorConfig(head="fpn", num_levels=1, center_radius=0.0)))
    assert single["all"] > 0.8, single


def test_empty_and_bad_input():
    got = assign_levels([torch.zeros(0, 4), torch.zeros(0, 4)], FPN)
    assert all((g == -1).all() for g in got.cells) and len(got.faces) == 0
    with pytest.raises(ValueError, match="empty batch"):
        assign_levels([], FPN)
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        assign_levels([torch.zeros(3, 5)], FPN)
