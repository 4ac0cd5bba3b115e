"""WIDER FACE protocol on a fixture in the official .mat layout, written here with scipy."""


import numpy as np
import pytest
import torch
from scipy.io import savemat

from scratchdet import wider_eval
from scratchdet.wider_eval import evaluate_wider, read_wider_predictions, write_wider_predictions


def cell(items):
    """A MATLAB cell column (n x 1), as the official files store their lists."""
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def write_gt(folder, events):
    """events: {event: {image: (xywh faces, {setting: 1-based kept indices})}} -> the four .mat files."""
    names = list(events)
    files = cell([cell(list(images)) for images in events.values()])
    faces = cell([cell([np.asarray(f, float).reshape(-1, 4) for f, _ in images.values()])
                  for images in events.values()])
    common = {"event_list": cell(names), "file_list": files, "face_bbx_list": faces}
    savemat(folder / "wider_face_val.mat", common)
    for setting in ("easy", "medium", "hard"):
        keeps = cell([cell([np.asarray(k[setting], float).reshape(-1, 1) for _, k in images.values()])
                      for images in events.values()])
        savemat(folder / f"wider_{setting}_val.mat", dict(common, gt_list=keeps))


F0, F1, F2, FB = [10, 10, 30, 30], [100, 10, 20, 20], [200, 10, 12, 12], [50, 50, 40, 40]
EVENTS = {
    "0--Parade": {
        # f0 counts in every setting, f1 from medium on, f2 only in hard
        "0_Parade_a": ([F0, F1, F2], {"easy": [1], "medium": [1, 2], "hard": [1, 2, 3]}),
        "0_Parade_b": ([FB], {"easy": [1], "medium": [1], "hard": [1]}),
    },
    "1--Handshaking": {"1_Handshaking_c": (np.zeros((0, 4)), {"easy": [], "medium": [], "hard": []})},
}


def xyxy(xywh):
    x, y, w, h = xywh
    return [x, y, x + w, y + h]


@pytest.fixture
def wider(tmp_path):
    gt_dir, pred_dir = tmp_path / "ground_truth", tmp_path / "pred"
    gt_dir.mkdir()
    write_gt(gt_dir, EVENTS)
    records = [
        # unsorted on purpose: hits on f0, f1, f2 and one false positive
        ("0--Parade/0_Parade_a.jpg", [xyxy(F2), xyxy(F0), [400, 400, 420, 420], xyxy(F1)], [0.6, 0.9, 0.7, 0.8]),
        ("0--Parade/0_Parade_b.jpg", np.zeros((0, 4)), []),
        ("1--Handshaking/1_Handshaking_c.jpg", [[0, 0, 10, 10]], [0.95]),  # image without faces: skipped
    ]
    assert write_wider_predictions(pred_dir, records) == 3
    return gt_dir, pred_dir


def test_prediction_files_in_official_layout(wider):
    _, pred_dir = wider
    lines = (pred_dir / "0--Parade" / "0_Parade_a.txt").read_text().splitlines()
    assert lines[0] == "0_Parade_a" and lines[1] == "4"
    assert lines[2] == "10.00 10.00 30.00 30.00 0.9"  # x y w h score, best first
    assert [float(line.split()[4]) for line in lines[2:]] == [0.9, 0.8, 0.7, 0.6]
    assert (pred_dir / "0--Parade" / "0_Parade_b.txt").read_text() == "0_Parade_b\n0\n"
    preds = read_wider_predictions(pred_dir)
    assert sorted(preds) == ["0--Parade", "1--Handshaking"]
    np.testing.assert_allclose(preds["0--Parade"]["0_Parade_a"][0], [10, 10, 30, 30, 0.9])
    assert preds["0--Parade"]["0_Parade_b"].shape == (0, 5)


def test_easy_medium_hard_by_hand(wider):
    # Scores normalise with min 0.6, max 0.95. Easy: 2 faces, f1/f2 hits ignored -> P 1 @ R 1/2, then
    # the false positive; AP 0.5. Medium: 3 faces, R 1/3, 2/3 at P 1; AP 2/3. Hard: 4 faces, R 1/4, 1/2
    # at P 1, then the FP, then f2 at the lowest score (normalised to 0): R 3/4 at P 3/4; AP 11/16.
    gt_dir, pred_dir = wider
    out = evaluate_wider(pred_dir, gt_dir)
    assert out["easy"] == pytest.approx(0.5)
    assert out["medium"] == pytest.approx(2 / 3)
    assert out["hard"] == pytest.approx(11 / 16)
    assert out["num_faces"] == {"easy": 2, "medium": 3, "hard": 4}
    assert out["num_images"] == 3 and out["missing"] == 0
    assert out["recall"]["hard"].shape == (1000,) and out["recall"]["hard"][-1] == pytest.approx(0.75)


def test_missing_prediction_files(wider):
    gt_dir, pred_dir = wider
    (pred_dir / "0--Parade" / "0_Parade_b.txt").unlink()
    with pytest.raises(ValueError, match=r"no predictions for 1 images, e.g. \['0--Parade/0_Parade_b'\]"):
        evaluate_wider(pred_dir, gt_dir)
    out = evaluate_wider(pred_dir, gt_dir, allow_missing=True)
    assert out["missing"] == 1 and out["hard"] == pytest.approx(11 / 16)


def test_missing_ground_truth_file(wider, tmp_path):
    gt_dir, pred_dir = wider
    (gt_dir / "wider_hard_val.mat").unlink()
    with pytest.raises(FileNotFoundError, match="wider_hard_val.mat"):
        evaluate_wider(pred_dir, gt_dir)


@pytest.mark.parametrize(
    "text, match",
    [
        ("img\n2\n1 2 3 4 0.5\n", r"a.txt:2: says 2 boxes but the file has 1 box lines"),
        ("img\nthree\n", r"a.txt:2: expected the number of boxes"),
        ("img\n1\n1 2 x 4 0.5\n", r"a.txt:3: expected 5 finite numbers 'x y w h score', got '1 2 x 4 0.5'"),
        ("img\n1\n1 2 3 4\n", r"a.txt:3: expected 5 finite numbers"),
        ("img\n", r"a.txt: expected the image name and a box count"),
    ],
)
def test_malformed_prediction_file(tmp_path, text, match):
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "a.txt").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_wider_predictions(tmp_path)


def test_writer_bad_input(tmp_path):
    with pytest.raises(ValueError, match="must be '<event>/<image>.jpg'"):
        write_wider_predictions(tmp_path, [("a.jpg", torch.zeros(0, 4), torch.zeros(0))])
    with pytest.raises(ValueError, match="need one finite score per box"):
        write_wider_predictions(tmp_path, [("e/a.jpg", torch.zeros(2, 4), torch.zeros(1))])
    with pytest.raises(FileNotFoundError, match="prediction folder not found"):
        read_wider_predictions(tmp_path / "nope")


def loop_image_pr(pred, gt, kept, iou_threshold=0.5, steps=1000):
    """The per-detection loop of the official tool (slow reference for the vectorised version)."""
    def iou(a, b):  # xywh, inclusive pixels, x2 = x + w
        ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
        iw, ih = min(ax2, bx2) - max(a[0], b[0]) + 1, min(ay2, by2) - max(a[1], b[1]) + 1
        if iw <= 0 or ih <= 0:
            return 0.0
        union = (a[2] + 1) * (a[3] + 1) + (b[2] + 1) * (b[3] + 1) - iw * ih
        return iw * ih / union

    counts = set(kept.tolist())
    state, recall_after, proposal = [0] * len(gt), [], []
    for p in pred:
        overlaps = [iou(p, g) for g in gt]
        m = int(np.argmax(overlaps))
        is_proposal = True
        if overlaps[m] >= iou_threshold:
            if m not in counts:
                state[m], is_proposal = -1, False
            elif state[m] == 0:
                state[m] = 1
        recall_after.append(state.count(1))
        proposal.append(is_proposal)
    out = np.zeros((steps, 2))
    for t in range(steps):
        above = [k for k in range(len(pred)) if pred[k][4] >= 1 - (t + 1) / steps]
        if above:
            out[t] = [sum(proposal[: above[-1] + 1]), recall_after[above[-1]]]
    return out


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_image_eval_equals_the_loop(seed):
    rng = np.random.default_rng(seed)
    gt = np.concatenate([rng.uniform(0, 200, (8, 2)), rng.uniform(5, 60, (8, 2))], axis=1)
    copies = gt[rng.integers(0, 8, 20)] + rng.normal(0, 4, (20, 4))  # duplicates and near misses
    pred = np.concatenate([copies, rng.uniform(0, 1, (20, 1))], axis=1)
    pred[:3, 4] = pred[3, 4]  # tied scores
    pred = pred[np.argsort(-pred[:, 4], kind="stable")]
    kept = np.flatnonzero(rng.uniform(size=8) < 0.6)
    np.testing.assert_array_equal(wider_eval._image_pr(pred, gt, kept, 0.5), loop_image_pr(pred, gt, kept))
