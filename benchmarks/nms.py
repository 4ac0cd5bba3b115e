"""nms: scratchdet vs torchvision.ops.nms, side by side in one run.

    python benchmarks/nms.py [--threads 1] [--quick] [--iou-threshold 0.45]

Two kinds of input:

* ``clustered``: YOLO-like output, many jittered, overlapping copies of a
  few faces (about 20 boxes per face), so most boxes are suppressed; at 100,
  128 and 200 boxes (one image after the score threshold), 1,000 and 10,000;
* ``uniform``: boxes scattered uniformly over a 1000 px image, so most
  survive; at 100, 1,000 and 10,000 boxes.

Each case first checks that both keep lists are equal, then times both
(warm-up, then the median of repeats, ours and torchvision's interleaved so
that a busy machine slows both alike). Prints one JSON document: median
seconds per call, the ratio ours / torchvision and the number of kept boxes.
"""

from __future__ import annotations

import statistics

import torch
import torchvision

from _timing import benchmark_parser, emit, environment, median_seconds, parse_args
from scratchdet.config import NMS_IOU_THRESHOLD
from scratchdet.nms import nms

SIZES = {"clustered": (100, 128, 200, 1000, 10_000), "uniform": (100, 1000, 10_000)}
QUICK_SIZES = {"clustered": (100, 128, 200, 1000), "uniform": (100, 1000)}


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


def _side_by_side(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, n: int, quick: bool) -> dict:
    """Median seconds of ours and torchvision's, timed in alternating rounds, and their ratio."""
    rounds = 1 if quick else 5
    repeats = (3 if n >= 10_000 else 7) if quick else (1 if n >= 10_000 else 5)
    min_time = 0.0 if n >= 10_000 else 0.02
    ours, ref = [], []
    for _ in range(rounds):
        ours.append(median_seconds(lambda: nms(boxes, scores, iou_threshold), repeats, min_time=min_time))
        ref.append(median_seconds(lambda: torchvision.ops.nms(boxes, scores, iou_threshold), repeats,
                                  min_time=min_time))
    ours_s, ref_s = statistics.median(ours), statistics.median(ref)
    return {"scratchdet_s": ours_s, "torchvision_s": ref_s, "ratio_ours_over_torchvision": ours_s / ref_s}


def main() -> None:
    parser = benchmark_parser(__doc__, "smaller sizes, fewer repeats")
    parser.add_argument("--iou-threshold", type=float, default=NMS_IOU_THRESHOLD)
    args = parse_args(parser)
    rows = []
    for kind, make in (("clustered", clustered_boxes), ("uniform", uniform_boxes)):
        for n in (QUICK_SIZES if args.quick else SIZES)[kind]:
            boxes, scores = make(n, seed=n)
            keep = nms(boxes, scores, args.iou_threshold)
            if not torch.equal(keep, torchvision.ops.nms(boxes, scores, args.iou_threshold)):
                raise AssertionError(f"keep lists differ for {kind} boxes, n={n}")
            rows.append({"boxes": kind, "n": n, "kept": len(keep), "keep_equal": True,
                         **_side_by_side(boxes, scores, args.iou_threshold, n, args.quick)})
    emit({"benchmark": "nms", "iou_threshold": args.iou_threshold,
          "environment": environment(args.threads), "results": rows})


if __name__ == "__main__":
    main()
