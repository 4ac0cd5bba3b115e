"""nms: scratchdet vs torchvision.ops.nms, side by side in one run.

    python benchmarks/nms.py [--threads 1] [--quick] [--iou-threshold 0.45]

Two kinds of input at 100, 1,000 and 10,000 boxes:

* ``clustered``: YOLO-like output, many jittered, overlapping copies of a
  few faces (about 20 boxes per face), so most boxes are suppressed;
* ``uniform``: boxes scattered uniformly over a 1000 px image, so most survive.

Each case first checks that both keep lists are equal, then times both
(warm-up, then the median of repeats). Prints one JSON document: median
seconds per call, the ratio ours / torchvision and the number of kept boxes.
"""

from __future__ import annotations


import torch
import torchvision

from _timing import benchmark_parser, emit, environment, median_seconds, parse_args
from scratchdet.nms import nms


def uniform_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 100 + 5
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def clustered_boxes(n: int, seed: int, boxes_per_face: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    faces = max(1, n // boxes_per_face)
    centres = torch.rand(faces, 2, generator=g) * 900 + 50
    sizes = torch.rand(faces, 1, generator=g) * 80 + 10
    which = torch.randint(0, faces, (n,), generator=g)
    ctr = centres[which] + torch.randn(n, 2, generator=g) * sizes[which] * 0.15
    wh = sizes[which] * (1 + 0.2 * torch.randn(n, 2, generator=g)).abs()
    return torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1), torch.rand(n, generator=g)


def main() -> None:
    parser = benchmark_parser(__doc__, "smaller sizes, fewer repeats")
    parser.add_argument("--iou-threshold", type=float, default=0.45)
    args = parse_args(parser)
    sizes = [100, 1000] if args.quick else [100, 1000, 10_000]
    rows = []
    for kind, make in (("clustered", clustered_boxes), ("uniform", uniform_boxes)):
        for n in sizes:
            boxes, scores = make(n, seed=n)
            keep = nms(boxes, scores, args.iou_threshold)
            if not torch.equal(keep, torchvision.ops.nms(boxes, scores, args.iou_threshold)):
                raise AssertionError(f"keep lists differ for {kind} boxes, n={n}")
            repeats = (3 if n >= 10_000 else 7) if args.quick else (5 if n >= 10_000 else 25)
            min_time = 0.0 if n >= 10_000 else 0.02
            ours = median_seconds(lambda: nms(boxes, scores, args.iou_threshold), repeats, min_time=min_time)
            ref = median_seconds(lambda: torchvision.ops.nms(boxes, scores, args.iou_threshold),
                                 repeats, min_time=min_time)
            rows.append({"boxes": kind, "n": n, "kept": len(keep), "keep_equal": True,
                         "scratchdet_s": ours, "torchvision_s": ref,
                         "ratio_ours_over_torchvision": ours / ref})
    emit({"benchmark": "nms", "iou_threshold": args.iou_threshold,
          "environment": environment(args.threads), "results": rows})


if __name__ == "__main__":
    main()
