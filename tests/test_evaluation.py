"""Matching, precision/recall and AP: hand-computed cases, edge cases, a loop VOC devkit, and torchmetrics."""

import math
import re

import numpy as np
import pytest
import torch

from scratchdet.evaluation import (
    COCO_IOU_THRESHOLDS,
    MATCHING_RULES,
    average_precision,
    collect_predictions,
    evaluate_by_crowd,
    evaluate_by_size,
    evaluate_detections,
    evaluate_detector,
    match_detections,
    operating_point,
    precision_recall,
)


def box(x, y, w, h):
    return [float(x), float(y), float(x + w), float(y + h)]


# Image 1: two faces. Detections: 0.9 on face A (TP), 0.8 a duplicate on A (FP),
# 0.7 on face B (TP), 0.6 on nothing (FP). Image 2: one face, no detection.
FACE_A, FACE_B = box(0, 0, 10, 10), box(50, 50, 20, 20)
HAND_PREDS = [
    {"boxes": torch.tensor([box(1, 1, 10, 10), box(0, 0, 10, 11), box(52, 50, 20, 20), box(90, 0, 5, 5)]),
     "scores": torch.tensor([0.9, 0.8, 0.7, 0.6])},
    {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)},
]
HAND_GTS = [torch.tensor([FACE_A, FACE_B]), torch.tensor([box(0, 0, 30, 30)])]


def test_hand_computed_curve_and_ap():
    out = evaluate_detections(HAND_PREDS, HAND_GTS, iou_thresholds=(0.5,))
    np.testing.assert_allclose(out["precision"], [1, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(out["recall"], [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert (out["tp"], out["fp"], out["num_gt"], out["num_detections"]) == (2, 2, 3, 4)
    assert out["ap50"] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)  # all-point: 5/9
    assert "ap50_95" not in out


@pytest.mark.parametrize("method, expected", [("all_point", 5 / 9), ("11_point", 6 / 11), ("coco101", 56 / 101)])
def test_ap_methods_by_hand(method, expected):
    # 11 points: recall 0-0.3 -> 1, 0.4-0.6 -> 2/3, 0.7-1 -> 0. 101 points: 34 x 1, 33 x 2/3, 34 x 0.
    precision, recall = np.array([1, 1 / 2, 2 / 3, 1 / 2]), np.array([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert average_precision(recall, precision, method) == pytest.approx(expected)


def test_match_detections_greedy_by_score():
    gt = torch.tensor([FACE_A, FACE_B])
    # Unsorted input: the 0.95 box overlaps A (IoU 0.68), the 0.9 box overlaps A better (1.0).
    boxes = torch.tensor([box(0, 0, 10, 10), box(52, 50, 20, 20), box(1, 1, 10, 10)])
    result = match_detections(boxes, torch.tensor([0.9, 0.3, 0.95]), gt)
    assert result.order.tolist() == [2, 0, 1]
    assert result.tp.tolist() == [True, False, True]  # A is taken by the better-scored box
    assert result.gt_index.tolist() == [0, -1, 1]
    assert result.ignored.tolist() == [False, False, False]


def test_duplicate_takes_the_next_best_free_face():
    # One detection overlaps both faces; the better one took face 0, so it gets face 1.
    gt = torch.tensor([box(0, 0, 10, 10), box(2, 0, 10, 10)])
    boxes = torch.tensor([box(0, 0, 10, 10), box(1, 0, 10, 10)])
    result = match_detections(boxes, torch.tensor([0.9, 0.8]), gt)
    assert result.gt_index.tolist() == [0, 1] and result.tp.all()


def test_iou_exactly_at_threshold_matches():
    gt = torch.tensor([box(0, 0, 10, 10)])
    half = torch.tensor([box(0, 0, 20, 10)])  # IoU = 100 / 200 = 0.5
    assert match_detections(half, torch.tensor([1.0]), gt, iou_threshold=0.5).tp.tolist() == [True]
    assert match_detections(half, torch.tensor([1.0]), gt, iou_threshold=0.51).tp.tolist() == [False]


def test_ignored_faces_are_neither_tp_nor_fp():
    gt = torch.tensor([FACE_A, FACE_B])
    boxes = torch.tensor([box(50, 50, 20, 20), box(51, 50, 20, 20), box(0, 0, 10, 10)])
    result = match_detections(boxes, torch.tensor([0.9, 0.8, 0.7]), gt, gt_ignore=torch.tensor([False, True]))
    assert result.ignored.tolist() == [True, False, False]  # matched the ignored face B
    assert result.tp.tolist() == [False, False, True]  # second on B: B is taken, so a false positive
    out = evaluate_detections([{"boxes": boxes, "scores": torch.tensor([0.9, 0.8, 0.7])}], [gt],
                              iou_thresholds=(0.5,), gt_ignore=[torch.tensor([False, True])])
    assert (out["num_gt"], out["tp"], out["fp"]) == (1, 1, 1)


def test_prefers_a_face_that_counts_over_an_ignored_one():
    gt = torch.tensor([box(0, 0, 10, 10), box(1, 0, 10, 10)])  # face 1 ignored, overlaps best
    result = match_detections(torch.tensor([box(1, 0, 10, 10)]), torch.tensor([1.0]), gt,
                              gt_ignore=torch.tensor([False, True]))
    assert result.gt_index.tolist() == [0] and result.tp.tolist() == [True]


# A curve whose precision rises again: TP, FP, FP, TP, TP, TP on 4 faces. Precision at the
# hits 1, 2/4, 3/5, 4/6; the envelope lifts the last three to 2/3.
RISING_PRECISION, RISING_RECALL = np.array([1, 1 / 2, 1 / 3, 2 / 4, 3 / 5, 4 / 6]), np.array([1, 1, 1, 2, 3, 4]) / 4


# all-point: 1/4 * (1 + 3 * 2/3) (without the envelope: 1/4 * (1 + 1/2 + 3/5 + 2/3) = 0.69).
# 11 points: recall 0-0.2 -> 1, 0.3-1 -> 2/3. 101 points: 0-0.25 (26) -> 1, 0.26-1 (75) -> 2/3.
@pytest.mark.parametrize("method, expected", [("all_point", 3 / 4), ("11_point", 25 / 33), ("coco101", 76 / 101)])
def test_ap_takes_the_precision_envelope(method, expected):
    assert average_precision(RISING_RECALL, RISING_PRECISION, method) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("matching", MATCHING_RULES)
def test_envelope_end_to_end(matching):
    faces = torch.tensor([box(30 * i, 0, 20, 20) for i in range(4)])
    nothing = [box(200, 200, 10, 10), box(300, 300, 10, 10)]
    boxes = torch.tensor([box(0, 0, 20, 20), *nothing, box(30, 0, 20, 20), box(60, 0, 20, 20), box(90, 0, 20, 20)])
    out = evaluate_detections([{"boxes": boxes, "scores": torch.linspace(0.9, 0.4, 6)}], [faces], (0.5,),
                              matching=matching)
    np.testing.assert_allclose(out["precision"], RISING_PRECISION)
    assert out["ap50"] == pytest.approx(3 / 4, abs=1e-12) and out["matching"] == matching


def test_no_detections_gives_zero_ap():
    preds = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}] * 2
    out = evaluate_detections(preds, HAND_GTS)
    assert out["ap50"] == 0.0 and out["ap50_95"] == 0.0 and out["num_gt"] == 3 and out["fp"] == 0


def test_no_ground_truth_gives_nan_ap_and_counts_false_positives():
    out = evaluate_detections(HAND_PREDS, [torch.zeros(0, 4), np.zeros((0, 4), np.float32)])
    assert math.isnan(out["ap50"]) and out["fp"] == 4 and out["num_gt"] == 0
    out = evaluate_detections([], [])
    assert math.isnan(out["ap50"]) and out["num_images"] == 0


def test_perfect_detector_scores_one():
    out = evaluate_detections([{"boxes": g, "scores": torch.ones(len(g))} for g in HAND_GTS], HAND_GTS)
    assert out["ap50"] == 1.0 and out["ap50_95"] == 1.0


def test_size_range_ignores_faces_and_detections_outside():
    gt = torch.tensor([box(0, 0, 10, 10), box(50, 50, 40, 40)])  # sizes 10 and 40
    preds = [{"boxes": torch.tensor([box(0, 0, 10, 10), box(50, 50, 40, 40), box(100, 100, 8, 8)]),
              "scores": torch.tensor([0.9, 0.8, 0.95])}]
    small = evaluate_detections(preds, [gt], iou_thresholds=(0.5,), size_range=(0, 16))
    assert (small["num_gt"], small["tp"], small["fp"], small["num_detections"]) == (1, 1, 1, 3)
    large = evaluate_detections(preds, [gt], iou_thresholds=(0.5,), size_range=(16, 1e9))
    # the small face and the unmatched 8 px detection are ignored: a perfect score
    assert (large["num_gt"], large["tp"], large["fp"], large["ap50"]) == (1, 1, 0, 1.0)


def test_max_detections_keeps_the_best():
    preds = [{"boxes": torch.tensor([box(90, 90, 5, 5), FACE_A]), "scores": torch.tensor([0.9, 0.1])}]
    out = evaluate_detections(preds, [torch.tensor([FACE_A])], iou_thresholds=(0.5,), max_detections=1)
    assert (out["tp"], out["fp"]) == (0, 1)


def test_precision_recall_drops_ignored_and_sorts_stably():
    precision, recall, scores = precision_recall([0.5, 0.9, 0.5, 0.7], [True, False, False, True], 4,
                                                 ignored=[False, False, False, True])
    np.testing.assert_allclose(scores, [0.9, 0.5, 0.5])
    np.testing.assert_allclose(precision, [0, 1 / 2, 1 / 3])
    np.testing.assert_allclose(recall, [0, 1 / 4, 1 / 4])


def test_evaluate_by_size_and_crowd_keys():
    out = evaluate_by_size(HAND_PREDS, HAND_GTS)
    assert set(out) == {"ap50", "num_gt", "ap50_small", "ap50_medium", "ap50_large", "ap50_ge24",
                        "num_gt_small", "num_gt_medium", "num_gt_large", "num_gt_ge24"}
    assert out["num_gt_small"] == 1 and out["num_gt_medium"] == 2 and out["num_gt_large"] == 0
    assert math.isnan(out["ap50_large"]) and out["ap50"] == pytest.approx(5 / 9)
    crowd = evaluate_by_crowd(HAND_PREDS, HAND_GTS)
    assert crowd["num_images_single"] == 1 and crowd["num_images_few"] == 1
    assert crowd["ap50_single"] == 0.0 and crowd["num_images_crowd"] == 0 and math.isnan(crowd["ap50_crowd"])


def test_evaluate_detector_on_a_source():
    source = [(np.zeros((100, 100, 3), np.uint8), np.asarray(g, np.float32)) for g in HAND_GTS]

    def nothing(image):
        assert image.shape == (100, 100, 3)
        return {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}

    preds, gts, seconds = collect_predictions(nothing, source, max_images=1)
    assert len(preds) == len(gts) == 1 and seconds >= 0
    assert torch.equal(gts[0], HAND_GTS[0])
    out = evaluate_detector(nothing, source)
    assert out["ap50"] == 0.0 and out["num_images"] == 2 and "ap50_95" in out and "ap50_crowd" in out


@pytest.mark.parametrize(
    "preds, gts, kwargs, error, match",
    [
        (HAND_PREDS, HAND_GTS[:1], {}, ValueError, "predictions for 2 images but ground truth for 1"),
        ([{"boxes": torch.zeros(0, 4)}], [torch.zeros(0, 4)], {}, TypeError, r"predictions\[0\] must be a dict"),
        ([{"boxes": torch.zeros(2, 4), "scores": torch.zeros(3)}], [torch.zeros(0, 4)], {}, ValueError,
         r"predictions\[0\]\['scores'\] must have shape \[K\] = \[2\]"),
        ([{"boxes": torch.zeros(1, 4), "scores": torch.tensor([float("nan")])}], [torch.zeros(0, 4)], {},
         ValueError, "must be finite"),
        ([{"boxes": torch.zeros(1, 5), "scores": torch.zeros(1)}], [torch.zeros(0, 4)], {}, ValueError,
         r"shape \[M, 4\]"),
        (HAND_PREDS, [torch.zeros(1, 3), torch.zeros(0, 4)], {}, ValueError, r"ground_truths\[0\] must have shape"),
        (HAND_PREDS, HAND_GTS, {"method": "voc"}, ValueError, "method must be one of"),
        (HAND_PREDS, HAND_GTS, {"iou_thresholds": (0.5, 1.5)}, ValueError, r"IoU thresholds must be numbers in \[0, 1\]"),
        (HAND_PREDS, HAND_GTS, {"gt_ignore": [None]}, ValueError, "gt_ignore must have one entry per image"),
        (HAND_PREDS, HAND_GTS, {"size_range": (48, 16)}, ValueError, r"size_range must be \(lo, hi\)"),
    ],
)
def test_bad_input(preds, gts, kwargs, error, match):
    with pytest.raises(error, match=match):
        evaluate_detections(preds, gts, **kwargs)


def test_match_detections_bad_input():
    with pytest.raises(ValueError, match="one number"):
        match_detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 4), iou_threshold=(0.5, 0.6))
    with pytest.raises(ValueError, match="gt_ignore must have one flag per face"):
        match_detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(2, 4), gt_ignore=[True])


# ------------------------------------------------------------ the two matching rules

# Faces A and B overlap (IoU 0.43), as in a crowd. The first detection is A; the duplicate
# overlaps A best (IoU 90/110 = 0.82) and B well enough (70/130 = 0.54).
CROWD_FACES = torch.tensor([box(0, 0, 10, 10), box(4, 0, 10, 10)])
CROWD_BOXES = torch.tensor([box(0, 0, 10, 10), box(1, 0, 10, 10)])


def test_duplicate_in_a_crowd_coco_takes_the_free_face_voc_does_not():
    coco = match_detections(CROWD_BOXES, torch.tensor([0.9, 0.8]), CROWD_FACES, matching="coco")
    voc = match_detections(CROWD_BOXES, torch.tensor([0.9, 0.8]), CROWD_FACES, matching="voc")
    assert coco.tp.tolist() == [True, True] and coco.gt_index.tolist() == [0, 1]
    assert voc.tp.tolist() == [True, False] and voc.gt_index.tolist() == [0, -1]  # its best face is taken
    assert voc.ignored.tolist() == [False, False]


def test_voc_needs_iou_above_the_threshold():
    gt = torch.tensor([box(0, 0, 10, 10)])
    half = torch.tensor([box(0, 0, 20, 10)])  # IoU = 100 / 200 = 0.5 exactly
    assert match_detections(half, torch.tensor([1.0]), gt, matching="voc").tp.tolist() == [False]
    assert match_detections(half, torch.tensor([1.0]), gt, 0.49, matching="voc").tp.tolist() == [True]
    assert match_detections(half, torch.tensor([1.0]), gt, matching="coco").tp.tolist() == [True]


def test_voc_best_face_ignored_ignores_the_detection():
    gt = torch.tensor([box(0, 0, 10, 10), box(1, 0, 10, 10)])  # face 1 ignored, overlaps best
    boxes, scores = torch.tensor([box(1, 0, 10, 10), box(1, 0, 10, 10)]), torch.tensor([1.0, 0.5])
    voc = match_detections(boxes, scores, gt, gt_ignore=torch.tensor([False, True]), matching="voc")
    assert voc.ignored.tolist() == [True, True] and voc.gt_index.tolist() == [1, 1] and not voc.tp.any()
    coco = match_detections(boxes, scores, gt, gt_ignore=torch.tensor([False, True]), matching="coco")
    assert coco.tp.tolist() == [True, False] and coco.ignored.tolist() == [False, True]


def test_voc_iou_tie_goes_to_the_first_face():
    gt = torch.tensor([box(0, 0, 10, 10), box(10, 0, 10, 10)])
    between = torch.tensor([box(5, 0, 10, 10), box(5, 0, 10, 10)])  # IoU 1/3 with both faces
    voc = match_detections(between, torch.tensor([0.9, 0.9]), gt, iou_threshold=0.3, matching="voc")
    assert voc.gt_index.tolist() == [0, -1] and voc.tp.tolist() == [True, False]
    coco = match_detections(between, torch.tensor([0.9, 0.9]), gt, iou_threshold=0.3, matching="coco")
    assert coco.gt_index.tolist() == [1, 0]  # pycocotools' tie rule: the last face


def test_matching_reaches_every_evaluation():
    preds = [{"boxes": CROWD_BOXES, "scores": torch.tensor([0.9, 0.8])}]
    coco, voc = ({"matching": m} for m in MATCHING_RULES)
    assert evaluate_detections(preds, [CROWD_FACES], (0.5,), **coco)["ap50"] == 1.0
    assert evaluate_detections(preds, [CROWD_FACES], (0.5,), **voc)["ap50"] == 0.5
    assert evaluate_detections(preds, [CROWD_FACES], COCO_IOU_THRESHOLDS, **voc)["ap_per_iou"][0.55] == 0.5
    assert (evaluate_by_size(preds, [CROWD_FACES], **coco)["ap50_small"],
            evaluate_by_size(preds, [CROWD_FACES], **voc)["ap50_small"]) == (1.0, 0.5)
    assert (evaluate_by_crowd(preds, [CROWD_FACES], **coco)["ap50_few"],
            evaluate_by_crowd(preds, [CROWD_FACES], **voc)["ap50_few"]) == (1.0, 0.5)
    assert operating_point(preds, [CROWD_FACES], 0.5, **coco)["fp"] == 0
    assert operating_point(preds, [CROWD_FACES], 0.5, **voc)["fp"] == 1
    source = [(np.zeros((20, 20, 3), np.uint8), CROWD_FACES.numpy())]
    detector = lambda image: preds[0]  # noqa: E731
    assert evaluate_detector(detector, source, **coco)["ap50"] == 1.0
    assert evaluate_detector(detector, source, **voc)["ap50"] == 0.5


def test_default_matching_is_coco():
    preds, gts = random_case(4)
    default, coco = evaluate_detections(preds, gts), evaluate_detections(preds, gts, matching="coco")
    assert default["ap_per_iou"] == coco["ap_per_iou"] and default["matching"] == "coco"


def call_with_matching(name, matching):
    """Call one public function that matches, on the hand-made case, with ``matching``."""
    source = [(np.zeros((100, 100, 3), np.uint8), g.numpy()) for g in HAND_GTS]
    calls = {
        "match_detections": lambda: match_detections(HAND_PREDS[0]["boxes"], HAND_PREDS[0]["scores"], HAND_GTS[0],
                                                      matching=matching),
        "evaluate_detections": lambda: evaluate_detections(HAND_PREDS, HAND_GTS, matching=matching),
        "evaluate_by_size": lambda: evaluate_by_size(HAND_PREDS, HAND_GTS, matching=matching),
        "evaluate_by_crowd": lambda: evaluate_by_crowd(HAND_PREDS, HAND_GTS, matching=matching),
        "operating_point": lambda: operating_point(HAND_PREDS, HAND_GTS, matching=matching),
        "evaluate_detector": lambda: evaluate_detector(lambda image: HAND_PREDS[0], source, matching=matching),
    }
    return calls[name]()


@pytest.mark.parametrize("name", ["match_detections", "evaluate_detections", "evaluate_by_size",
                                  "evaluate_by_crowd", "operating_point", "evaluate_detector"])
@pytest.mark.parametrize("matching", ["pascal", "VOC", None, ("voc",)])
def test_bad_matching_is_rejected_by_name(name, matching):
    with pytest.raises(ValueError, match=rf"matching must be one of \('coco', 'voc'\), got {re.escape(repr(matching))}"):
        call_with_matching(name, matching)


def plain_iou(a, b):
    iw, ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0])), max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def voc_devkit_match(boxes, scores, faces, ignore, threshold):
    """The VOC devkit's loop (``voc_eval.py``): each detection's best face; ``ovmax > ovthresh``.

    Returns tp, ignored, gt_index in decreasing score order; ties in score keep the input order
    (the devkit's ``np.argsort`` does not promise an order for them). Difficult = ignored.
    """
    order = sorted(range(len(scores)), key=lambda d: -scores[d])
    taken, tp, ignored, gt_index = [False] * len(faces), [], [], []
    for d in order:
        ovmax, jmax = -math.inf, -1
        for j, face in enumerate(faces):
            ov = plain_iou(boxes[d], face)
            if ov > ovmax:  # the first face wins a tie
                ovmax, jmax = ov, j
        hit = ovmax > threshold
        if hit and ignore[jmax]:  # "difficult": neither TP nor FP
            tp.append(False), ignored.append(True), gt_index.append(jmax)
        elif hit and not taken[jmax]:
            taken[jmax] = True
            tp.append(True), ignored.append(False), gt_index.append(jmax)
        else:  # no face, or a duplicate on a taken one
            tp.append(False), ignored.append(False), gt_index.append(-1)
    return tp, ignored, gt_index


def crowd_scene(rng, max_faces=25):
    """Faces packed on an integer grid (2/3 of the scenes a crowd), detections of integer shifts and
    widths of them (IoU exactly 0.5 and equal IoUs happen), exact duplicates, scores with ties."""
    m = int(rng.integers(0, max_faces + 1)) if rng.random() < 2 / 3 else int(rng.integers(0, 4))
    xy, size = rng.integers(0, 60, (m, 2)), rng.choice([10, 20], (m, 1))
    faces = np.concatenate([xy, xy + size], axis=1).astype(float)
    copies = np.concatenate([faces, faces[rng.random(m) < 0.5]])
    shift = rng.integers(-4, 5, copies.shape) * (rng.random((len(copies), 1)) < 0.7)
    det = copies + shift
    det[:, 2] = np.where(rng.random(len(det)) < 0.2, det[:, 0] + 2 * (copies[:, 2] - copies[:, 0]), det[:, 2])
    extra = rng.integers(0, 80, (int(rng.integers(0, 6)), 2))
    det = np.concatenate([det, np.concatenate([extra, extra + rng.choice([5, 10, 20], (len(extra), 1))], 1)])
    det = np.concatenate([det, det[rng.random(len(det)) < 0.1]])  # exact duplicate boxes
    det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
    scores = rng.choice([0.3, 0.5, 0.7, 0.9], len(det)) if rng.random() < 0.5 else rng.random(len(det))
    return det, scores, faces, rng.random(m) < 0.2


@pytest.mark.parametrize("seed", range(10))
def test_voc_matching_equals_the_devkit_loop(seed):
    rng, thresholds = np.random.default_rng(seed), (0.3, 0.5, 0.75)
    scenes = [crowd_scene(rng) for _ in range(30)]
    seen = {"iou 0.5": 0, "iou tie": 0, "ignored": 0, "duplicate": 0, "rules differ": 0}
    flags = {t: [] for t in thresholds}
    for det, scores, faces, ignore in scenes:
        for t in thresholds:
            ours = match_detections(det, scores, faces, t, gt_ignore=ignore, matching="voc")
            ref = voc_devkit_match(det.tolist(), scores.tolist(), faces.tolist(), ignore.tolist(), t)
            assert (ours.tp.tolist(), ours.ignored.tolist(), ours.gt_index.tolist()) == ref
            flags[t].append(ref)
            coco = match_detections(det, scores, faces, t, gt_ignore=ignore, matching="coco")
            seen["rules differ"] += coco.tp.tolist() != ref[0]
        if len(faces):
            ious = np.array([[plain_iou(d, f) for f in faces] for d in det.tolist()])
            best = ious.max(axis=1)
            seen["iou 0.5"] += int((best == 0.5).sum())
            seen["iou tie"] += int(((ious == best[:, None]).sum(axis=1) > 1)[best > 0].sum())
            seen["ignored"] += sum(ref[1])
            seen["duplicate"] += int(((best > 0.75) & ~np.array(ref[0]) & ~np.array(ref[1])).sum())
    assert min(seen.values()) > 0, seen  # the cases hold what they are meant to test
    # the same, vectorised over IoU thresholds, pooled into AP
    out = evaluate_detections([{"boxes": d, "scores": s} for d, s, _, _ in scenes], [f for _, _, f, _ in scenes],
                              thresholds, gt_ignore=[i for _, _, _, i in scenes], matching="voc")
    scores = np.concatenate([np.sort(s, kind="stable")[::-1] for _, s, _, _ in scenes])
    for t in thresholds:
        tp, ignored = (np.concatenate([r[k] for r in flags[t]]).astype(bool) for k in (0, 1))
        precision, recall, _ = precision_recall(scores, tp, out["num_gt"], ignored)
        assert out["ap_per_iou"][t] == pytest.approx(average_precision(recall, precision), abs=1e-12)


# ------------------------------------------------------------ torchmetrics

def random_case(seed, images=30, realistic=True):
    """Faces of 4-150 px; detections = jittered faces (sometimes twice) + false positives."""
    g = torch.Generator().manual_seed(seed)
    preds, gts = [], []
    for _ in range(images):
        m = int(torch.randint(0, 9, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * 300
        gt = torch.cat([xy, xy + torch.rand(m, 2, generator=g) * 150 + 4], dim=1)
        copies = gt.repeat(int(torch.randint(0, 3, (1,), generator=g)), 1) if realistic else gt[:0]
        jittered = copies + torch.randn(copies.shape, generator=g) * (copies[:, 2:] - copies[:, :2]).repeat(1, 2) * 0.1
        fxy = torch.rand(6, 2, generator=g) * 300
        det = torch.cat([jittered, torch.cat([fxy, fxy + torch.rand(6, 2, generator=g) * 100 + 4], dim=1)])
        det = torch.cat([torch.minimum(det[:, :2], det[:, 2:] - 1), torch.maximum(det[:, 2:], det[:, :2] + 1)], 1)
        preds.append({"boxes": det, "scores": torch.rand(len(det), generator=g)})
        gts.append(gt)
    return preds, gts


def torchmetrics_map(preds, gts):
    detection = pytest.importorskip("torchmetrics.detection")
    pytest.importorskip("faster_coco_eval")
    metric = detection.MeanAveragePrecision(iou_type="bbox", backend="faster_coco_eval")
    label = lambda n: torch.zeros(n, dtype=torch.long)  # noqa: E731
    metric.update([dict(p, labels=label(len(p["boxes"]))) for p in preds],
                  [{"boxes": g, "labels": label(len(g))} for g in gts])
    return {k: float(v) for k, v in metric.compute().items() if k.startswith("map")}


@pytest.mark.parametrize("seed, realistic", [(0, True), (1, True), (2, False)])
def test_agrees_with_torchmetrics(seed, realistic):
    preds, gts = random_case(seed, realistic=realistic)
    ref = torchmetrics_map(preds, gts)
    ours = evaluate_detections(preds, gts, COCO_IOU_THRESHOLDS, method="coco101", max_detections=100)
    assert ours["ap50"] == pytest.approx(ref["map_50"], abs=1e-3)
    assert ours["ap50_95"] == pytest.approx(ref["map"], abs=1e-3)
    assert ours["ap_per_iou"][0.75] == pytest.approx(ref["map_75"], abs=1e-3)
    for name, size_range in (("small", (0, 32)), ("medium", (32, 96)), ("large", (96, 1e5))):
        by_size = evaluate_detections(preds, gts, method="coco101", size_range=size_range)
        assert by_size["ap50_95"] == pytest.approx(ref[f"map_{name}"], abs=1e-3), name
    if realistic:
        assert ref["map_50"] > 0.2  # the case is not degenerate


def test_operating_point_by_hand():
    # Score >= 0.75 keeps 0.9 (TP on A) and 0.8 (duplicate: FP); faces: A, B, and image 2's face.
    point = operating_point(HAND_PREDS, HAND_GTS, score_threshold=0.75)
    assert (point["tp"], point["fp"], point["fn"], point["num_images"]) == (1, 1, 2, 2)
    assert point["precision"] == 0.5 and point["recall"] == pytest.approx(1 / 3)
    assert point["fp_per_image"] == 0.5
    everything = operating_point(HAND_PREDS, HAND_GTS, score_threshold=0.0)
    assert (everything["tp"], everything["fp"], everything["fn"]) == (2, 2, 1)
    nothing = operating_point(HAND_PREDS, HAND_GTS, score_threshold=0.95)
    assert (nothing["tp"], nothing["fp"]) == (0, 0) and math.isnan(nothing["precision"]) and nothing["recall"] == 0


def test_operating_point_agrees_with_the_full_curve():
    g = torch.Generator().manual_seed(3)
    gts = [torch.tensor([box(10 * i, 10 * i, 8, 8) for i in range(k)]).reshape(-1, 4) for k in (3, 0, 5)]
    preds = []
    for gt in gts:
        jitter = gt + torch.rand(gt.shape, generator=g) * 3
        extra = torch.rand(2, 2, generator=g) * 100
        boxes = torch.cat([jitter, torch.cat([extra, extra + 6], dim=1)])
        preds.append({"boxes": boxes, "scores": torch.rand(len(boxes), generator=g)})
    curve = evaluate_detections(preds, gts, (0.5,))
    for threshold in (0.2, 0.5, 0.8):
        point = operating_point(preds, gts, threshold)
        k = int((curve["scores"] >= threshold).sum())
        assert point["tp"] == round(curve["recall"][k - 1] * curve["num_gt"]) if k else point["tp"] == 0
        assert point["tp"] + point["fp"] == k


@pytest.mark.parametrize("threshold", [float("nan"), "0.5", None])
def test_operating_point_rejects_bad_threshold(threshold):
    with pytest.raises(ValueError, match="score_threshold must be a finite number"):
        operating_point(HAND_PREDS, HAND_GTS, threshold)
