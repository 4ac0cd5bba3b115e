"""SynthFaces: drawing images on the fly vs reading them from the cache, one run.

    python benchmarks/synthfaces.py [--threads 1] [--quick] [--images 100]

For each image size (256 and 480; ``--quick``: 256 only, fewer images) it
draws the first ``--images`` validation images ``--repeats`` times (after a
warm-up pass), takes each image's median time and reports images/s and
faces/s overall and per scene type, then builds a cache of the same images in
a temporary folder and times reading them back. The target is at least 200
images/s at 256 px on one core (wall clock; ``generate_images_per_cpu_s``
divides by this process's CPU time instead, which is steadier on a busy
machine). OpenCV and torch threads are fixed to ``--threads``. Prints one
JSON document.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import cv2

from _timing import benchmark_parser, emit, environment, median_seconds, parse_args
from scratchdet.data.synthfaces import GENERATOR_VERSION, SCENE_TYPES, SynthFaces, generate_sample

TARGET_IMAGES_PER_S = 200


def time_generation(size: int, num_images: int, repeats: int) -> dict:
    """Median seconds per image for images 0..num_images-1 of the val split."""
    samples = [generate_sample(0, "val", i, size) for i in range(num_images)]  # warm-up pass
    times = [[0.0] * repeats for _ in range(num_images)]
    cpu = [[0.0] * repeats for _ in range(num_images)]
    for r in range(repeats):
        for i in range(num_images):
            start, start_cpu = time.perf_counter(), time.process_time()
            generate_sample(0, "val", i, size)
            times[i][r], cpu[i][r] = time.perf_counter() - start, time.process_time() - start_cpu
    per_image = [statistics.median(t) for t in times]
    total, faces = sum(per_image), sum(s.meta.num_faces for s in samples)
    total_cpu = sum(statistics.median(t) for t in cpu)
    by_scene = {}
    for scene in SCENE_TYPES:
        picked = [(t, s) for t, s in zip(per_image, samples) if s.meta.scene == scene]
        if picked:
            seconds = sum(t for t, _ in picked)
            by_scene[scene] = {"images": len(picked), "images_per_s": len(picked) / seconds,
                               "faces_per_image": sum(s.meta.num_faces for _, s in picked) / len(picked)}
    return {"images": num_images, "faces_per_image": faces / num_images,
            "generate_images_per_s": num_images / total, "generate_faces_per_s": faces / total,
            "generate_images_per_cpu_s": num_images / total_cpu,
            "by_scene": by_scene}


def time_cache(size: int, num_images: int, repeats: int) -> dict:
    """Build a cache of the same images in a temporary folder, then time reading it."""
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        ds = SynthFaces("val", image_size=size, num_images=num_images, root=root, progress=False)
        build = time.perf_counter() - start
        read = median_seconds(lambda: [ds[i] for i in range(num_images)], repeats, warmup=1)
    return {"cache_build_s": build, "cache_read_images_per_s": num_images / read}


def main() -> None:
    parser = benchmark_parser(__doc__, "256 px only, 20 images, 2 repeats")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parse_args(parser)
    cv2.setNumThreads(args.threads)
    sizes, num_images, repeats = ([256], 20, 2) if args.quick else ([256, 480], args.images, args.repeats)
    rows = []
    for size in sizes:
        row = {"image_size": size, **time_generation(size, num_images, repeats),
               **time_cache(size, num_images, repeats)}
        row["ratio_generate_over_cache_read"] = row["generate_images_per_s"] / row["cache_read_images_per_s"]
        rows.append(row)
    at_256 = next(r["generate_images_per_s"] for r in rows if r["image_size"] == 256)
    emit({"benchmark": "synthfaces", "generator_version": GENERATOR_VERSION,
          "environment": environment(args.threads),
          "target_images_per_s_at_256": TARGET_IMAGES_PER_S, "meets_target": at_256 >= TARGET_IMAGES_PER_S,
          "results": rows})


if __name__ == "__main__":
    main()
