"""YOLO target encoding and loss: scratchdet (vectorised) vs Python loops, side by side.

    python benchmarks/grid.py [--threads 1] [--quick]

Encoding: one image with M faces (``encode_targets``) and a batch of 16 images
sharing M faces (``encode_targets_batch``, one scatter), each against a loop
over boxes, at M = 10, 100, 1,000. Loss: ``yolo_loss`` against a loop over
images, cells and predictors. Every pair is checked to agree before timing.
Prints one JSON document: median seconds per call and loop / ours ratios.
"""

from __future__ import annotations

import math

import torch

from _timing import benchmark_parser, emit, environment, median_seconds, parse_args
from scratchdet.config import DetectorConfig
from scratchdet.grid import encode_targets, encode_targets_batch
from scratchdet.loss import yolo_loss

BATCH = 16


def random_boxes(m: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(m, 2, generator=g) * size / 4 + 2
    xy = torch.rand(m, 2, generator=g) * (size - wh)
    return torch.cat([xy, xy + wh], dim=1)


def loop_encode(boxes: torch.Tensor, config: DetectorConfig) -> torch.Tensor:
    """One Python step per box: the rules of scratchdet.grid spelled out."""
    S, size = config.num_cells, config.image_size
    out = torch.zeros(S, S, 5)
    best = {}
    for x1, y1, x2, y2 in boxes.tolist():
        gx, gy = (x1 + x2) / 2 * S / size, (y1 + y2) / 2 * S / size
        j, i = min(int(gx), S - 1), min(int(gy), S - 1)
        area = (x2 - x1) * (y2 - y1)
        if best.get((i, j), -1.0) >= area:
            continue
        best[(i, j)] = area
        out[i, j] = torch.tensor([gx - j, gy - i, (x2 - x1) / size, (y2 - y1) / size, 1.0])
    return out


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def _box(i, j, x, y, w, h, S):
    cx, cy = (j + x) / S, (i + y) / S
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def loop_loss(pred: torch.Tensor, targets: torch.Tensor, config: DetectorConfig) -> float:
    """Total YOLO v1 loss with one Python step per image, cell and predictor."""
    S, B = config.num_cells, config.boxes_per_cell
    coord = obj_sum = noobj = 0.0
    for n, cells in enumerate(pred.tolist()):
        for i in range(S):
            for j in range(S):
                tx, ty, tw, th, has_face = targets[n, i, j].tolist()
                preds = [cells[i][j][5 * b: 5 * b + 5] for b in range(B)]
                resp = -1
                if has_face:
                    face = _box(i, j, tx, ty, tw, th, S)
                    ious = [_iou(_box(i, j, p[0], p[1], p[2] ** 2, p[3] ** 2, S), face) for p in preds]
                    dists = [(p[0] - tx) ** 2 + (p[1] - ty) ** 2 for p in preds]
                    resp = ious.index(max(ious)) if max(ious) > 0 else dists.index(min(dists))
                    x, y, sw, sh, conf = preds[resp]
                    coord += (x - tx) ** 2 + (y - ty) ** 2 + (sw - math.sqrt(tw)) ** 2 + (sh - math.sqrt(th)) ** 2
                    obj_sum += (conf - ious[resp]) ** 2
                noobj += sum(p[4] ** 2 for b, p in enumerate(preds) if b != resp)
    total = config.lambda_coord * coord + config.lambda_obj * obj_sum + config.lambda_noobj * noobj
    return total / pred.shape[0]


def bench_encode(config: DetectorConfig, m: int, repeats: int) -> dict:
    boxes = random_boxes(m, config.image_size, seed=m)
    torch.testing.assert_close(encode_targets(boxes, config), loop_encode(boxes, config), atol=1e-5, rtol=0)
    batch = list(boxes.tensor_split(BATCH))
    torch.testing.assert_close(encode_targets_batch(batch, config),
                               torch.stack([loop_encode(b, config) for b in batch]), atol=1e-5, rtol=0)
    single = median_seconds(lambda: encode_targets(boxes, config), repeats, min_time=0.01)
    loop_single = median_seconds(lambda: loop_encode(boxes, config), max(3, repeats // 4), warmup=1)
    batched = median_seconds(lambda: encode_targets_batch(batch, config), repeats, min_time=0.01)
    per_image = median_seconds(lambda: [encode_targets(b, config) for b in batch], repeats, min_time=0.01)
    loop_batch = median_seconds(lambda: [loop_encode(b, config) for b in batch], max(3, repeats // 4), warmup=1)
    return {
        "boxes": m,
        "one_image": {"scratchdet_s": single, "loop_s": loop_single, "speedup_vs_loop": loop_single / single},
        f"batch_of_{BATCH}": {"encode_targets_batch_s": batched, "encode_targets_per_image_s": per_image,
                              "loop_s": loop_batch, "speedup_vs_loop": loop_batch / batched,
                              "speedup_vs_per_image": per_image / batched},
    }


def bench_loss(config: DetectorConfig, batch: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    targets = encode_targets_batch([random_boxes(12, config.image_size, seed=k) for k in range(batch)], config)
    pred = torch.rand(batch, config.num_cells, config.num_cells, config.channels, generator=g)
    ours = yolo_loss(pred, targets, config)["total"]
    torch.testing.assert_close(ours.item(), loop_loss(pred, targets, config), rtol=1e-4, atol=1e-5)
    forward = median_seconds(lambda: yolo_loss(pred, targets, config), repeats, min_time=0.01)
    grad_pred = pred.clone().requires_grad_()
    backward = median_seconds(lambda: yolo_loss(grad_pred, targets, config)["total"].backward(), repeats,
                              min_time=0.01)
    loop = median_seconds(lambda: loop_loss(pred, targets, config), 3, warmup=1)
    return {"batch": batch, "scratchdet_forward_s": forward, "scratchdet_forward_backward_s": backward,
            "loop_forward_s": loop, "speedup_vs_loop": loop / forward}


def main() -> None:
    parser = benchmark_parser(__doc__, "fewer sizes and repeats")
    args = parse_args(parser)
    config = DetectorConfig()  # 256 px, S = 8, B = 2
    sizes = [10, 1000] if args.quick else [10, 100, 1000]
    repeats = 5 if args.quick else 25
    encode = [bench_encode(config, m, repeats) for m in sizes]
    loss = [bench_loss(config, n, repeats) for n in ([4] if args.quick else [4, 16])]
    at_1000 = next(r for r in encode if r["boxes"] == 1000)
    emit({
        "benchmark": "grid_encode_and_loss",
        "environment": environment(args.threads),
        "config": config.to_dict(),
        "encode": encode,
        "loss": loss,
        "summary": {"encode_speedup_vs_loop_at_1000_boxes_one_image": at_1000["one_image"]["speedup_vs_loop"],
                    f"encode_speedup_vs_loop_at_1000_boxes_batch_of_{BATCH}":
                        at_1000[f"batch_of_{BATCH}"]["speedup_vs_loop"]},
    })


if __name__ == "__main__":
    main()
