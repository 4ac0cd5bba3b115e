"""``scratchdet detect``: faces in an image, a folder of images, a video or a webcam.

    scratchdet detect photo.jpg --checkpoint model.pt                # -> runs/detect/run/photo.jpg + detections.json
    scratchdet detect photo.jpg                                      # the bundled model (config.DEFAULT_MODEL)
    scratchdet detect photos/ --checkpoint model.pt --format csv     # every file in photos/ (not sub-folders)
    scratchdet detect photos/ --checkpoint model.pt --image-size 480 # a finer grid: 15 x 15 cells at stride 32
    scratchdet detect clip.mp4 --checkpoint model.pt --out out/      # -> out/clip.mp4 (annotated) + out/clip.json
    scratchdet detect --camera 0 --checkpoint model.pt               # a window; q or Esc quits
    scratchdet detect clip.mp4 --blur                                # -> out: the faces blurred, no boxes drawn

Outputs: annotated copies (boxes and scores drawn; with ``--blur``, the faces
blurred or pixelated instead, :mod:`scratchdet.anonymise`) and one JSON (or CSV) of
boxes, xyxy pixels of each image or frame, with scores. JSON:
``{"images": [{"file", "height", "width", "boxes": [[x1, y1, x2, y2], ...],
"scores": [...]}], "skipped": [{"file", "error"}]}``, for videos ``"frames":
[{"frame", "boxes", "scores"}]``; CSV: one row per box (``file`` or ``frame``,
``x1, y1, x2, y2, score``), so images without faces have no row.

Nothing is lost: each run writes to a fresh folder (``runs/detect/run``,
``run2``, ...) unless ``--out`` names one; every file is written atomically;
the sources are never written over; a run that reads no image writes no
detections file (an earlier one stays); Ctrl-C during a folder or a video
writes the detections finished so far, says where, and stops (exit 130).

A folder run tries every file, skips those that are not readable images (a
text file, a truncated or corrupt JPEG), lists them at the end and fails (exit
status 2) only when no image at all could be read. Photos of any size are
letterboxed to ``--image-size`` (default: the training size; any multiple of
the stride ``config.cell_size``, ``N`` or ``HxW``), and the grid follows it.

Without ``--checkpoint``, detect loads ``$SCRATCHDET_MODEL`` or else the
bundled ``config.DEFAULT_MODEL``. ``--blur`` lowers the default score threshold
to ``config.BLUR_SCORE_THRESHOLD`` (recall first: a missed face stays visible);
an explicit ``--score-threshold`` wins.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from scratchdet._io import atomic_write, atomic_write_text, fresh_dir, same_file
from scratchdet.anonymise import BLUR_METHODS, blur_faces
from scratchdet.config import (BLUR_SCORE_THRESHOLD, DEFAULT_MODEL, MAX_DETECTIONS, NMS_IOU_THRESHOLD,
                               SCORE_THRESHOLD)
from scratchdet.data.photos import read_image
from scratchdet.letterbox import check_input_size
from scratchdet.model import YoloDetector
from scratchdet.viz import draw_boxes

# FFmpeg prints its own lines ("moov atom not found") for a corrupt video, beside our one-line
# error; quiet unless the user asks (OPENCV_FFMPEG_LOGLEVEL=24 shows FFmpeg's warnings again).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__all__ = ["VIDEO_SUFFIXES", "GUI_HELP", "DEFAULT_PARENT", "MODEL_ENV", "default_checkpoint", "load_detector",
           "detect_images", "detect_video", "run_camera", "parse_image_size", "add_arguments", "run"]

DEFAULT_PARENT = Path("runs/detect")  # each run gets a fresh folder under it: run, run2, ...
MODEL_ENV = "SCRATCHDET_MODEL"  # names the model detect loads without --checkpoint
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
GUI_HELP = ("OpenCV was installed without GUI support (opencv-python-headless, which albumentations depends "
            "on); pip install 'opencv-python>=4.10,<5' in this environment for --camera (it replaces the "
            "headless cv2; reinstalling albumentations may bring it back), or run detect on a video file")


def default_checkpoint() -> Path:
    """The model detect loads without ``--checkpoint``: ``$SCRATCHDET_MODEL``, else ``config.DEFAULT_MODEL``.

    Raises:
        FileNotFoundError: that file does not exist (one line: how to pass a checkpoint).
    """
    named = os.environ.get(MODEL_ENV)
    path = Path(named) if named else DEFAULT_MODEL
    if not path.is_file():
        where = f"{MODEL_ENV}={named}" if named else f"the default model {path}"
        raise FileNotFoundError(f"no --checkpoint given and {where} does not exist; pass --checkpoint "
                                f"PATH (a .ckpt from training or a YoloDetector.save file) or set {MODEL_ENV}")
    return path


def load_detector(checkpoint: str | os.PathLike | None = None, device: str = "cpu") -> YoloDetector:
    """A :class:`YoloDetector` from a checkpoint, in eval mode on ``device``, with one-line errors.

    ``checkpoint=None`` loads :func:`default_checkpoint`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable checkpoint, or ``device`` is unknown or unavailable.
    """
    device = _check_device(device)
    checkpoint = default_checkpoint() if checkpoint is None else checkpoint
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {os.fspath(checkpoint)!r} does not exist")
    try:
        model = YoloDetector.from_checkpoint(checkpoint, map_location="cpu")
    except ValueError:
        raise
    except Exception as error:  # torch.load raises many kinds (UnpicklingError, RuntimeError, EOFError)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"could not read checkpoint {os.fspath(checkpoint)!r}: {reason}") from None
    return model.to(device).eval()


def _check_device(device: str) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")
    return device


def _detect(model: YoloDetector, image: np.ndarray, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Boxes ``(K, 4)`` xyxy pixels of ``image`` and scores ``(K,)``, as numpy."""
    found = model.predict(image, args.image_size, args.score_threshold, args.iou_threshold, args.max_detections)[0]
    return {"boxes": found["boxes"].cpu().numpy(), "scores": found["scores"].cpu().numpy()}


def _annotate(image: np.ndarray, found: dict[str, np.ndarray], args: argparse.Namespace) -> np.ndarray:
    """RGB image -> BGR copy with the boxes and scores drawn, or with ``--blur`` the faces blurred."""
    if args.blur:
        return cv2.cvtColor(blur_faces(image, found["boxes"], method=args.blur_method), cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(draw_boxes(image, found["boxes"], found["scores"]), cv2.COLOR_RGB2BGR)


def _record(found: dict[str, np.ndarray], **fields) -> dict:
    return {**fields, "boxes": np.round(found["boxes"], 2).tolist(),
            "scores": np.round(found["scores"], 4).tolist()}


def _progress(items, args: argparse.Namespace, desc: str, total: int | None = None):
    from tqdm import tqdm  # the text bar on stderr (tqdm.auto wants ipywidgets in notebooks)

    return tqdm(items, desc=desc, total=total, unit="image" if desc == "images" else "frame",
                disable=args.no_progress, file=sys.stderr, dynamic_ncols=True)


def detect_images(model: YoloDetector, paths: list[Path], out_dir: Path, args: argparse.Namespace) -> dict:
    """Detect in image files; write annotated (``--blur``: anonymised) copies and ``detections.json`` (``.csv``).

    Files that cannot be read (not an image, truncated, damaged) are skipped
    and listed under ``"skipped"``. Nothing is written when no file could be
    read (an earlier ``detections.json`` stays). On Ctrl-C the detections done
    so far are written, their path printed, and ``KeyboardInterrupt`` re-raised.

    Returns:
        ``{"images": [record per image read], "skipped": [{"file", "error"}],
        "output": path or None when nothing was read}``.
    """
    records, skipped = [], []
    output = out_dir / f"detections.{args.format}"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for path in _progress(paths, args, "images"):
            try:
                image = read_image(path)
            except OSError as error:  # FileNotFoundError too (a file removed meanwhile)
                skipped.append({"file": str(path), "error": str(error)})
                continue
            found = _detect(model, image, args)
            writable = path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")
            target = out_dir / (path.name if writable else path.name + ".png")
            _check_not_overwriting(path, target)
            _write_image(target, _annotate(image, found, args))
            records.append(_record(found, file=str(path), height=image.shape[0], width=image.shape[1]))
    except KeyboardInterrupt:
        if records:
            _write(output, {"images": records, "skipped": skipped, "interrupted": True}, "file", args.format)
            print(f"interrupted after {len(records) + len(skipped)} of {len(paths)} files: detections of "
                  f"{len(records)} images in {output}", file=sys.stderr)
        raise
    if not records:
        return {"images": records, "skipped": skipped, "output": None}
    _write(output, {"images": records, "skipped": skipped}, "file", args.format)
    return {"images": records, "skipped": skipped, "output": str(output)}


def _write_image(path: Path, bgr: np.ndarray) -> None:
    """Encode by ``path``'s suffix and write atomically."""
    ok, encoded = cv2.imencode(path.suffix, bgr)
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(encoded.tobytes()))


def _write(path: Path, document: dict, key: str, fmt: str) -> None:
    """The JSON document, or a CSV of one row per box keyed by ``key`` (file or frame); atomic."""
    if fmt == "json":
        atomic_write_text(path, json.dumps(document, indent=1) + "\n")
        return
    rows = document["images" if key == "file" else "frames"]

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([key, "x1", "y1", "x2", "y2", "score"])
            for row in rows:
                writer.writerows([row[key], *box, score] for box, score in zip(row["boxes"], row["scores"]))

    atomic_write(path, write_csv)


def _open_video(path: Path) -> tuple[cv2.VideoCapture, np.ndarray]:
    """A capture positioned after its first frame, and that frame (BGR); one-line errors."""
    capture = cv2.VideoCapture(str(path))
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok or frame is None:
        capture.release()
        raise OSError(f"could not read video {path}: not a video file, corrupt, or a codec OpenCV lacks")
    return capture, frame


def detect_video(model: YoloDetector, path: Path, out_dir: Path, args: argparse.Namespace) -> dict:
    """Detect in every frame of a video; write ``<stem>.mp4`` (mp4v, annotated or anonymised) and ``.json``/``.csv``.

    Returns:
        ``{"frames": number read, "fps", "video": annotated path, "output": detections path}``.
    """
    video_out = out_dir / f"{path.stem}.mp4"
    _check_not_overwriting(path, video_out)
    _check_not_overwriting(path, out_dir / f"{path.stem}.{args.format}")
    out_dir.mkdir(parents=True, exist_ok=True)
    capture, frame = _open_video(path)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if np.isfinite(fps) and fps > 0 else 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    height, width = frame.shape[:2]
    writer = cv2.VideoWriter(str(video_out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        capture.release()
        raise OSError(f"could not write video {video_out} with the mp4v codec")
    frames = []
    output = out_dir / f"{path.stem}.{args.format}"
    document = {"video": str(path), "fps": fps, "height": height, "width": width, "frames": frames}
    try:
        with _progress(None, args, "frames", total) as bar:
            while frame is not None:
                image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                found = _detect(model, image, args)
                writer.write(_annotate(image, found, args))
                frames.append(_record(found, frame=len(frames)))
                bar.update()
                ok, frame = capture.read()
                frame = frame if ok else None
    except KeyboardInterrupt:
        _write(output, {**document, "interrupted": True}, "frame", args.format)
        print(f"interrupted after {len(frames)} frames: their detections in {output}", file=sys.stderr)
        raise
    finally:
        capture.release()
        writer.release()
    _write(output, document, "frame", args.format)
    return {"frames": len(frames), "fps": fps, "video": str(video_out), "output": str(output)}


def _check_gui() -> None:
    """Raise ``RuntimeError`` (one line) unless OpenCV can open a window here."""
    gui = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")]
    if gui and gui[0].split(":", 1)[1].strip().upper() == "NONE":
        raise RuntimeError(GUI_HELP)
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise RuntimeError("--camera opens a window, but there is no display here (DISPLAY is not set)")
    try:
        cv2.namedWindow("scratchdet", cv2.WINDOW_NORMAL)
    except cv2.error as error:
        raise RuntimeError(f"{GUI_HELP} (cv2: {str(error).strip().splitlines()[0]})") from None


def run_camera(model: YoloDetector, index: int, args: argparse.Namespace) -> int:
    """Show webcam ``index`` with detections in a window until q or Esc; return the frames shown."""
    _check_gui()
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        cv2.destroyAllWindows()
        raise OSError(f"could not open camera {index} (is one connected, and free?)")
    shown = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            image = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            cv2.imshow("scratchdet", _annotate(image, _detect(model, image, args), args))
            shown += 1
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                break
    finally:
        capture.release()
        cv2.destroyAllWindows()
    return shown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``scratchdet detect SOURCE [--checkpoint CKPT] [--blur] ...``."""
    parser.add_argument("source", nargs="?", default=None, help="an image, a folder of images, or a video file")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help=f"a .ckpt from training or a YoloDetector.save file (default: ${MODEL_ENV}, else "
                             f"the bundled model models/{DEFAULT_MODEL.name})")
    parser.add_argument("--out", default=None,
                        help=f"output folder (default: a fresh {DEFAULT_PARENT}/run, run2, ... per run)")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help=f"minimum score (default: {SCORE_THRESHOLD}; with --blur {BLUR_SCORE_THRESHOLD})")
    parser.add_argument("--iou-threshold", type=float, default=NMS_IOU_THRESHOLD,
                        help=f"NMS IoU threshold (default: {NMS_IOU_THRESHOLD})")
    parser.add_argument("--max-detections", type=int, default=MAX_DETECTIONS,
                        help=f"per image (default: {MAX_DETECTIONS})")
    parser.add_argument("--image-size", type=parse_image_size, default=None, metavar="N|HxW",
                        help="network input size, multiples of the model's stride (default: its training size)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")
    parser.add_argument("--camera", type=int, default=None, metavar="N", help="webcam N in a window instead of SOURCE")
    parser.add_argument("--format", default="json", choices=("json", "csv"), help="detections file (default: json)")
    parser.add_argument("--blur", action="store_true",
                        help="write the images or video with the faces blurred instead of boxes drawn (recall "
                             "first: a lower default --score-threshold; faces the model misses stay visible)")
    parser.add_argument("--blur-method", default="gaussian", choices=BLUR_METHODS,
                        help="how --blur hides a face (default: gaussian)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_image_size(text: str) -> int | tuple[int, int]:
    """``"480"`` -> 480, ``"384x640"`` -> (384, 640) (height x width); ``argparse`` errors otherwise."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected N or HxW in pixels (e.g. 480 or 384x640), got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _check_not_overwriting(source: Path, target: Path) -> None:
    if same_file(source, target):
        raise ValueError(f"--out {target.parent} would overwrite the source {source}; choose another --out")


def _check_args(args: argparse.Namespace, model: YoloDetector) -> None:
    if args.image_size is not None:
        try:
            check_input_size(args.image_size, model.config.cell_size)
        except ValueError as error:
            raise ValueError(f"--image-size: {error}") from None
    if args.format not in ("json", "csv"):
        raise ValueError(f"--format must be json or csv, got {args.format!r}")


def _image_paths(source: Path, out: str | None) -> list[Path]:
    """The files to read; refuses ``--out`` = the source folder (a fresh folder never is)."""
    if not source.is_dir():
        return [source]
    if out is not None and same_file(source, out):
        raise ValueError(f"--out {out} is the source folder; annotated copies would overwrite the photos")
    paths = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    if not paths:
        raise ValueError(f"folder {source} holds no files")
    return paths


def run(args: argparse.Namespace) -> None:
    """Run ``scratchdet detect`` as parsed by a parser set up with :func:`add_arguments`."""
    if (args.source is None) == (args.camera is None):
        raise ValueError("give either SOURCE (an image, folder or video) or --camera N, not both or neither")
    source = None if args.source is None else Path(args.source)
    if source is not None and not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    args = _with_defaults(args)
    model = load_detector(args.checkpoint, args.device)
    _check_args(args, model)
    if source is None:
        print(f"camera {args.camera}: {run_camera(model, args.camera, args)} frames")
        return
    is_video = source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES
    if not is_video:
        paths = _image_paths(source, args.out)
        if source.is_file():  # one image: read it first, so a bad file leaves every output as it was
            read_image(source)
    out_dir = _out_dir(args)
    try:
        if is_video:
            result = detect_video(model, source, out_dir, args)
            print(f"{result['frames']} frames -> {result['video']}, detections in {result['output']}")
        else:
            _report(detect_images(model, paths, out_dir, args), source)
    finally:
        if args.out is None and not any(out_dir.iterdir()):
            out_dir.rmdir()  # the fresh folder of a run that wrote nothing


def _with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """A copy with the score threshold the run uses: the user's, else the one ``--blur`` asks for."""
    threshold = args.score_threshold
    if threshold is None:
        threshold = BLUR_SCORE_THRESHOLD if args.blur else SCORE_THRESHOLD
    return argparse.Namespace(**{**vars(args), "score_threshold": threshold})


def _out_dir(args: argparse.Namespace) -> Path:
    """``--out`` (created if needed), or a fresh ``runs/detect/run<k>``."""
    if args.out is None:
        return fresh_dir(DEFAULT_PARENT, "run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _report(result: dict, source: Path) -> None:
    """Print the summary and the skipped files; raise when nothing could be read."""
    images, skipped = result["images"], result["skipped"]
    if not images and source.is_file():
        raise OSError(skipped[0]["error"])
    if not images:
        raise OSError(f"no image in {source} could be read ({len(skipped)} files skipped; first: "
                      f"{skipped[0]['error']}); nothing written")
    faces = sum(len(r["scores"]) for r in images)
    print(f"{len(images)} images, {faces} faces -> {Path(result['output']).parent}/, detections in {result['output']}")
    if skipped:
        print(f"skipped {len(skipped)} of {len(images) + len(skipped)} files:")
        for item in skipped:
            print(f"  {item['file']}: {item['error']}")
