"""box_iou: scratchdet vs torchvision.ops.box_iou vs a Python loop, side by side.

    python benchmarks/boxes.py [--threads 1] [--quick]

Prints JSON: median seconds per call and the ratio ours / torchvision at each
size (M x M boxes). The loop reference is timed on small sizes only.
"""

from __future__ import annotations


import torch
import torchvision

from _timing import benchmark_parser, emit, environment, median_seconds, parse_args
from scratchdet.boxes import box_iou


def random_boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 500
    wh = torch.rand(n, 2, generator=g) * 100 + 1
    return torch.cat([xy, xy + wh], dim=1)


def loop_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(len(a), len(b))
    for i, p in enumerate(a.tolist()):
        for j, q in enumerate(b.tolist()):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - iw * ih
            out[i, j] = iw * ih / union
    return out


def main() -> None:
    parser = benchmark_parser(__doc__, "fewer sizes and repeats")
    args = parse_args(parser)
    sizes = [100, 1000] if args.quick else [10, 100, 1000, 4000]
    repeats = 5 if args.quick else 25
    rows = []
    for n in sizes:
        a, b = random_boxes(n, 0), random_boxes(n, 1)
        torch.testing.assert_close(box_iou(a, b), torchvision.ops.box_iou(a, b))
        ours = median_seconds(lambda: box_iou(a, b), repeats, min_time=0.01)
        ref = median_seconds(lambda: torchvision.ops.box_iou(a, b), repeats, min_time=0.01)
        row = {"boxes": f"{n}x{n}", "scratchdet_s": ours, "torchvision_s": ref,
               "ratio_ours_over_torchvision": ours / ref}
        if n <= 100:
            row["loop_s"] = median_seconds(lambda: loop_iou(a, b), 3, warmup=1)
            row["speedup_vs_loop"] = row["loop_s"] / ours
        rows.append(row)
    emit({"benchmark": "box_iou", "environment": environment(args.threads), "results": rows})


if __name__ == "__main__":
    main()
