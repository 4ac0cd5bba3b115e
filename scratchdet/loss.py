"""The YOLO v1 loss (Redmon et al. 2016, eq. 3) for B predictors per cell.

For every image, with 1_ij^obj = "predictor b of cell (i, j) is responsible
for the face in that cell":

    xy    = lambda_coord * sum 1_ij^obj [(x - x^)^2 + (y - y^)^2]
    wh    = lambda_coord * sum 1_ij^obj [(sqrt_w - sqrt(w^))^2 + (sqrt_h - sqrt(h^))^2]
    obj   = lambda_obj   * sum 1_ij^obj (conf - conf^)^2
    noobj = lambda_noobj * sum (1 - 1_ij^obj) conf^2
    total = xy + wh + obj + noobj

summed over cells and predictors and divided by the batch size N (per image,
as darknet does). Choices, and where they differ from the paper's text:

* The network predicts sqrt(w), sqrt(h) directly (as darknet's detection
  layer does) instead of w, h followed by a sqrt: no sqrt of a negative or of
  zero, so neither the loss nor its gradient can be NaN. Only the target gets a
  sqrt, of w^, h^ >= 0, with no gradient.
* The responsible predictor is the one whose decoded box has the highest IoU
  with the face (selection made on detached values). When every predictor of
  the cell has IoU 0 (typical at initialisation) the one whose centre is
  closest to the face centre is chosen instead of an arbitrary first one.
* conf^ is the IoU of the responsible box with the face, detached (paper), or
  1 with ``config.conf_target == "one"`` (common in re-implementations: a
  target that does not move while boxes are still poor).
* noobj covers every predictor that is not responsible, including the other
  B - 1 predictors of a cell that holds a face (as in eq. 3 and darknet).
* No class term: there is one class (face), so P(face | object) is 1.

Non-finite predictions are never hidden: a NaN or +-inf anywhere in ``pred``
makes ``total`` (and the terms it enters) NaN or inf, because every predictor
enters a term, even with weight 0 (0 * NaN = NaN, 0 * inf = NaN), and the IoU
of a NaN box is NaN (:func:`scratchdet.boxes.box_iou_paired`). Checking that
costs a host sync, so it is opt-in: ``yolo_loss(..., check_finite=True)``
raises a ``ValueError`` naming the first non-finite term.

Taught in ``notebooks/04_loss.ipynb``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratchdet.boxes import box_iou_paired
from scratchdet.config import DetectorConfig
from scratchdet.grid import cells_to_boxes, check_grid

__all__ = ["LOSS_TERMS", "yolo_loss", "responsible_mask"]

LOSS_TERMS = ("xy", "wh", "obj", "noobj", "total")


def _check_inputs(pred: Tensor, targets: Tensor, config: DetectorConfig) -> None:
    check_grid(pred, config, "pred", batched=True)
    check_grid(targets, config, "targets", channels=5, batched=True)
    if pred.shape[0] != targets.shape[0] or pred.shape[0] == 0:
        raise ValueError(f"pred and targets need the same number N >= 1 of images, got "
                         f"{pred.shape[0]} and {targets.shape[0]}")
    obj = targets[..., 4]
    obj_ok = ((obj == 0) | (obj == 1)).all()
    if not bool(obj_ok & (targets[..., :4] >= 0).all()):  # one host sync; >= 0 also catches NaN
        if not obj_ok:
            raise ValueError(f"targets[..., 4] (obj) must be 0 or 1, got values {obj.unique()[:5].tolist()}")
        raise ValueError("targets[..., :4] (x, y, w, h) must be finite and >= 0; "
                         "build targets with scratchdet.grid.encode_targets_batch")


def _check_finite(terms: dict[str, Tensor], pred: Tensor) -> None:
    """Raise naming the first non-finite term (in ``LOSS_TERMS`` order) and the first bad prediction."""
    finite = torch.isfinite(torch.stack([terms[name].detach() for name in LOSS_TERMS]))  # (5,)
    if bool(finite.all()):
        return
    name = LOSS_TERMS[int((~finite).nonzero()[0])]
    bad = (~torch.isfinite(pred.detach())).nonzero()  # (P, 4)
    at = ", ".join(map(str, bad[0].tolist())) if len(bad) else ""
    first = f", the first pred[{at}] = {pred[tuple(bad[0])].item()}" if len(bad) else ""
    raise ValueError(f"yolo_loss: term {name!r} is {terms[name].item()} "
                     f"({len(bad)} non-finite values in pred{first})")


def responsible_mask(pred: Tensor, targets: Tensor, config: DetectorConfig) -> tuple[Tensor, Tensor]:
    """Which predictor answers for each face, and its IoU with the face.

    Args:
        pred: ``Tensor[N, S, S, B*5]`` network output (see :func:`yolo_loss`).
        targets: ``Tensor[N, S, S, 5]`` from :func:`scratchdet.grid.encode_targets`.
        config: gives S and B.

    Returns:
        ``(mask, iou)``, both ``[N, S, S, B]``: ``mask`` is True for the one
        responsible predictor of each cell with a face (highest IoU, else the
        closest centre), ``iou`` the detached IoU of every predicted box with
        its cell's face (0 in empty cells).
    """
    _check_inputs(pred, targets, config)
    return _responsible(pred.detach().unflatten(-1, (config.boxes_per_cell, 5)), targets, config.num_cells)


def _responsible(cells: Tensor, targets: Tensor, num_cells: int) -> tuple[Tensor, Tensor]:
    """cells [N, S, S, B, 5] (detached), targets [N, S, S, 5] -> (mask, iou) [N, S, S, B]."""
    pred_boxes = cells_to_boxes(cells[..., 0:2], cells[..., 2:4].square(), num_cells)  # (N, S, S, B, 4)
    face = targets[..., None, :]  # (N, S, S, 1, 5)
    face_boxes = cells_to_boxes(face[..., 0:2], face[..., 2:4], num_cells)  # (N, S, S, 1, 4)
    iou = box_iou_paired(pred_boxes, face_boxes)  # (N, S, S, B)
    dist = (cells[..., 0:2] - face[..., 0:2]).square().sum(-1)  # (N, S, S, B) centre distance^2
    best = torch.where(iou.amax(-1) > 0, iou.argmax(-1), dist.argmin(-1))  # (N, S, S)
    one_hot = torch.nn.functional.one_hot(best, cells.shape[-2]).bool()  # (N, S, S, B)
    return one_hot & (targets[..., 4:5] > 0), iou


def yolo_loss(pred: Tensor, targets: Tensor, config: DetectorConfig,
              check_finite: bool = False) -> dict[str, Tensor]:
    """YOLO v1 loss, term by term (see the module docstring for the equations).

    Args:
        pred: ``Tensor[N, S, S, B*5]``, per predictor ``(x, y, sqrt_w, sqrt_h,
            conf)`` as the model outputs them: x, y (cell-relative) and conf
            already in [0, 1] (sigmoid), sqrt_w, sqrt_h raw real numbers.
        targets: ``Tensor[N, S, S, 5]`` of ``(x, y, w, h, obj)`` from
            :func:`scratchdet.grid.encode_targets_batch`: x, y cell-relative,
            w, h image-normalised (not square-rooted), obj in {0, 1}.
        config: S, B, ``lambda_coord``, ``lambda_noobj``, ``lambda_obj`` and
            ``conf_target`` (``"iou"`` or ``"one"``).
        check_finite: raise if a term is NaN or inf (one host sync). Off by
            default: a NaN or inf prediction then gives a non-finite
            ``total``, never a silent finite number (see the module docstring).

    Returns:
        dict of scalar tensors ``xy``, ``wh``, ``obj``, ``noobj`` (each
        already weighted by its lambda) and ``total`` (their sum), all summed
        over cells and divided by N. Only ``total`` needs ``backward()``.

    Raises:
        TypeError, ValueError: wrong types, shapes that do not match the
            config, or obj values other than 0 and 1; with ``check_finite``,
            a non-finite term (``"yolo_loss: term 'xy' is nan ..."``).
    """
    _check_inputs(pred, targets, config)
    cells = pred.unflatten(-1, (config.boxes_per_cell, 5))  # (N, S, S, B, 5)
    resp, iou = _responsible(cells.detach(), targets, config.num_cells)  # (N, S, S, B) each
    face = targets[..., None, :]  # (N, S, S, 1, 5)
    resp_f = resp.to(pred.dtype)
    xy_err = (cells[..., 0:2] - face[..., 0:2]).square().sum(-1)  # (N, S, S, B)
    wh_err = (cells[..., 2:4] - face[..., 2:4].sqrt()).square().sum(-1)  # (N, S, S, B)
    conf = cells[..., 4]  # (N, S, S, B)
    conf_target = iou if config.conf_target == "iou" else torch.ones_like(iou)
    n = pred.shape[0]
    terms = {
        "xy": config.lambda_coord * (resp_f * xy_err).sum() / n,
        "wh": config.lambda_coord * (resp_f * wh_err).sum() / n,
        "obj": config.lambda_obj * (resp_f * (conf - conf_target).square()).sum() / n,
        "noobj": config.lambda_noobj * ((1 - resp_f) * conf.square()).sum() / n,
    }
    terms["total"] = terms["xy"] + terms["wh"] + terms["obj"] + terms["noobj"]
    if check_finite:
        _check_finite(terms, pred)
    return terms
