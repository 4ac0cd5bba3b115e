"""Export a trained detector with ``torch.export`` (``.pt2``) or ONNX, and load it back.

Both artifacts hold the *network*: input ``images`` float32 ``[N, 3, H, W]``
RGB in [0, 1] (letterboxed; the ImageNet normalisation is inside), output
``grid`` float32 ``[N, H/stride, W/stride, B*5]``, with N, H and W dynamic (H
and W any multiples of the stride ``config.cell_size``, from
:data:`MIN_CELLS` to :data:`MAX_CELLS` cells). Each file carries the model's hyperparameters (its
config) as JSON: the ``scratchdet.json`` extra file of the ``.pt2``, the
``scratchdet`` metadata property of the ``.onnx``.

* **pt2** (:func:`export_pt2`): ``torch.export.export`` with ``torch.export.Dim``
  for batch, rows and columns, saved with ``torch.export.save``. Needs torch
  (not scratchdet) to run: ``torch.export.load(path).module()(images)``.
* **ONNX** (:func:`export_onnx`, opset :data:`ONNX_OPSET`, torch's
  ``torch.export``-based exporter): runs in ONNX Runtime or any other runtime,
  in any language. To decode by hand: predictor b of cell (row i, column j) is
  ``grid[n, i, j, 5*b : 5*b + 5] = (x, y, sqrt_w, sqrt_h, conf)``, its box
  centre ``((j + x) * stride, (i + y) * stride)`` pixels and size
  ``(sqrt_w**2, sqrt_h**2) * config.image_size`` pixels (relative to the
  *training* size, at every input size), its score ``conf``; keep ``conf >=
  threshold``, run NMS.

Letterbox, decoding and NMS are not in the files: :func:`load_exported` wraps
either file in an :class:`ExportedDetector` whose ``predict`` is
:func:`scratchdet.model.predict_with`, the path ``YoloDetector.predict`` takes,
with the one :mod:`scratchdet.letterbox` and the one
:func:`scratchdet.nms.postprocess`. :func:`parity` checks a file against the
eager model.

TorchScript (the previous whole-pipeline export) is gone: ``torch.jit`` is
deprecated upstream, it needed second, TorchScript-able copies of the
letterbox and NMS, and it ran at one input size only. What it alone offered,
NMS inside a file that runs without Python, ONNX offers with the few lines of
decoding above (and libtorch users can AOT-compile the ``.pt2``).
Taught in ``notebooks/09_inference_and_export.ipynb``.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scratchdet._io import atomic_write, same_file
from scratchdet.config import MAX_DETECTIONS, NMS_IOU_THRESHOLD, SCORE_THRESHOLD, DetectorConfig
from scratchdet.data.photos import read_image, sample_photos
from scratchdet.detect import load_detector
from scratchdet.letterbox import Size
from scratchdet.model import Images, YoloDetector, describe_output, predict_with

__all__ = ["ONNX_OPSET", "FORMATS", "MIN_CELLS", "MAX_CELLS", "METADATA_KEY", "export_pt2", "export_onnx",
           "ExportedDetector", "load_exported", "parity", "add_arguments", "run"]

ONNX_OPSET = 18
FORMATS = ("pt2", "onnx")
SUFFIXES = {"pt2": ".pt2", "onnx": ".onnx"}
MIN_CELLS = 2  # fewest grid cells per side (torch.export specialises a size of 1)
MAX_CELLS = 64  # most grid cells per side of an exported input (2048 px at stride 32)
MAX_BATCH = 1024
METADATA_KEY = "scratchdet.json"  # pt2 extra file; the ONNX metadata key is "scratchdet"
_ONNX_KEY = "scratchdet"


def _cpu_eval_copy(model: YoloDetector) -> YoloDetector:
    if not isinstance(model, YoloDetector):
        raise TypeError(f"model must be a YoloDetector, got {type(model).__name__}")
    copy = YoloDetector.from_hyperparameters(model.hyperparameters)
    copy.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    return copy.requires_grad_(False).eval()


def _dynamic_shapes(config: DetectorConfig) -> dict:
    """Batch, rows and columns dynamic; H = stride * rows and W = stride * cols by construction."""
    stride = config.cell_size
    rows = torch.export.Dim("rows", min=MIN_CELLS, max=MAX_CELLS)
    cols = torch.export.Dim("cols", min=MIN_CELLS, max=MAX_CELLS)
    return {"images": {0: torch.export.Dim("batch", min=1, max=MAX_BATCH), 2: stride * rows, 3: stride * cols}}


def _example(config: DetectorConfig) -> tuple[Tensor]:
    size = config.image_size  # rows != cols and batch > 1, so nothing specialises to a constant
    return (torch.rand(2, 3, size, size + config.cell_size),)


def _metadata(model: YoloDetector) -> str:
    return json.dumps({"format_version": 1, "hyperparameters": model.hyperparameters,
                       "input": "images float32 [N, 3, H, W] RGB in [0, 1], H, W multiples of config.cell_size",
                       "output": describe_output(model.config)})


def _check_out(path: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    return path


def export_pt2(model: YoloDetector, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``torch.export`` the network to ``path`` (``.pt2``), config in the ``scratchdet.json`` extra file.

    Args:
        model: the detector (copied to the CPU in eval mode; not changed).
        path: the file to write (atomically); its folder is created.
        overwrite: replace an existing file (default: refuse).

    Returns:
        ``Path(path)``. The file maps ``images [N, 3, H, W]`` to ``grid [N, H/stride, W/stride, B*5]``.
    """
    model = _cpu_eval_copy(model)
    path = _check_out(path, overwrite)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch.export's notes on guards it added itself
        program = torch.export.export(model, _example(model.config),
                                      dynamic_shapes=_dynamic_shapes(model.config), strict=False)
    extra = {METADATA_KEY: _metadata(model)}
    return atomic_write(path, lambda tmp: _save_pt2(program, tmp, extra))


def _save_pt2(program, path: str, extra: dict) -> None:
    with open(path, "wb") as handle:  # a handle: torch warns about a temporary name not ending in .pt2
        torch.export.save(program, handle, extra_files=extra)


def export_onnx(model: YoloDetector, path: str | os.PathLike, opset: int = ONNX_OPSET,
                overwrite: bool = False) -> Path:
    """ONNX (opset >= 18) of the network; dynamic batch, height and width; config in the metadata.

    Args:
        model: the detector (copied to the CPU in eval mode; not changed).
        path: the file to write (atomically); its folder is created.
        opset: ONNX opset, at least 18 (torch's exporter's minimum).
        overwrite: replace an existing file (default: refuse).

    Returns:
        ``Path(path)``: input ``images`` ``[N, 3, H, W]``, output ``grid`` ``[N, H/stride, W/stride, B*5]``.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 18:
        raise ValueError(f"opset must be an int >= 18 (torch.export-based ONNX exporter), got {opset!r}")
    model = _cpu_eval_copy(model)
    path = _check_out(path, overwrite)
    return atomic_write(path, lambda tmp: _onnx_write(model, tmp, opset))


def _onnx_write(model: YoloDetector, path: str, opset: int) -> None:
    try:
        import onnx
    except ImportError as error:
        raise RuntimeError(f"ONNX export needs onnx and onnxscript ({error}); pip install -e '.[dev]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(model, _example(model.config), path, input_names=["images"], output_names=["grid"],
                          opset_version=opset, dynamo=True, external_data=False, verbose=False,
                          dynamic_shapes=_dynamic_shapes(model.config))
    proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = _ONNX_KEY, _metadata(model)
    onnx.save(proto, path)


class ExportedDetector:
    """An exported file (``.pt2`` or ``.onnx``) behind :meth:`YoloDetector.predict`'s interface.

    Attributes:
        path, format (``"pt2"`` or ``"onnx"``), config (:class:`DetectorConfig`),
        hyperparameters (as :attr:`YoloDetector.hyperparameters`).

    Build it with :func:`load_exported`.
    """

    def __init__(self, path: Path, fmt: str, hyperparameters: dict, grid_fn) -> None:
        self.path, self.format, self.hyperparameters = path, fmt, hyperparameters
        self.config = DetectorConfig.from_dict(dict(hyperparameters["config"]))
        self._grid_fn = grid_fn

    @torch.no_grad()
    def grid(self, images: Tensor) -> Tensor:
        """The network: ``Tensor[N, 3, H, W]`` float in [0, 1] -> ``Tensor[N, H/stride, W/stride, B*5]``.

        H and W are multiples of the stride, from ``MIN_CELLS`` to ``MAX_CELLS`` cells.
        """
        stride = self.config.cell_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] % stride or images.shape[3] % stride:
            raise ValueError(f"images must have shape [N, 3, H, W] with H and W multiples of the stride {stride}, "
                             f"got {list(images.shape)}")
        if not all(MIN_CELLS <= side // stride <= MAX_CELLS for side in images.shape[2:]):
            raise ValueError(f"exported models take H and W from {MIN_CELLS * stride} to {MAX_CELLS * stride} px "
                             f"({MIN_CELLS} to {MAX_CELLS} cells of {stride}), got {list(images.shape)}")
        return self._grid_fn(images.float().cpu().contiguous())

    def predict(self, images: Images, image_size: Size | None = None, score_threshold: float = SCORE_THRESHOLD,
                iou_threshold: float = NMS_IOU_THRESHOLD,
                max_detections: int = MAX_DETECTIONS) -> list[dict[str, Tensor]]:
        """:meth:`YoloDetector.predict` with this file computing the grid (same arguments and result)."""
        return predict_with(self.grid, self.config, images, image_size, score_threshold, iou_threshold,
                            max_detections)

    def __repr__(self) -> str:
        return f"ExportedDetector({os.fspath(self.path)!r}, format={self.format!r}, config={self.config})"


def load_exported(path: str | os.PathLike, threads: int = 1) -> ExportedDetector:
    """Load a file written by :func:`export_pt2` or :func:`export_onnx` (by its suffix).

    Args:
        path: a ``.pt2`` or ``.onnx`` file.
        threads: ONNX Runtime intra-op threads (ONNX only).

    Raises:
        FileNotFoundError: no file; ValueError: another suffix, or a file without scratchdet's metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {os.fspath(path)!r}")
    if path.suffix == ".pt2":
        extra = {METADATA_KEY: ""}
        module = torch.export.load(str(path), extra_files=extra).module()
        return ExportedDetector(path, "pt2", _read_metadata(extra[METADATA_KEY], path), module)
    if path.suffix == ".onnx":
        session = _onnx_session(path, threads)
        meta = session.get_modelmeta().custom_metadata_map.get(_ONNX_KEY, "")
        run = lambda images: torch.from_numpy(session.run(["grid"], {"images": images.numpy()})[0])  # noqa: E731
        return ExportedDetector(path, "onnx", _read_metadata(meta, path), run)
    raise ValueError(f"{os.fspath(path)!r}: expected a .pt2 or .onnx file from scratchdet export")


def _read_metadata(text: str, path: Path) -> dict:
    try:
        return json.loads(text)["hyperparameters"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{os.fspath(path)!r} has no scratchdet metadata (was it written by scratchdet export?)") \
            from None


def _onnx_session(path: Path, threads: int):
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeError("onnxruntime is not installed: pip install onnxruntime (or -e '.[dev]')") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity(model: YoloDetector, exported: ExportedDetector, photos: list[np.ndarray],
           image_sizes: tuple[Size, ...] = (None,), score_threshold: float = SCORE_THRESHOLD) -> dict:
    """Compare ``exported.predict`` with ``model.predict`` on photos at several input sizes.

    Args:
        photos: numpy ``uint8 (H, W, 3)`` RGB photos of any sizes.
        image_sizes: network input sizes (``None``: the training size).

    Returns:
        ``{"images", "sizes", "same_counts" (bool), "max_abs_box" (pixels), "max_abs_score"}``.
    """
    model = _cpu_eval_copy(model)
    same, box_diff, score_diff = True, 0.0, 0.0
    for size in image_sizes:
        got = exported.predict(photos, size, score_threshold)
        expected = model.predict(photos, size, score_threshold)
        for g, e in zip(got, expected):
            if len(g["boxes"]) != len(e["boxes"]):
                same = False
            elif len(g["boxes"]):
                box_diff = max(box_diff, float((g["boxes"] - e["boxes"]).abs().max()))
                score_diff = max(score_diff, float((g["scores"] - e["scores"]).abs().max()))
    return {"images": len(photos), "sizes": [s or model.config.image_size for s in image_sizes],
            "same_counts": same, "max_abs_box": box_diff, "max_abs_score": score_diff}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``scratchdet export CHECKPOINT --format pt2|onnx [--out FILE] [--overwrite]``."""
    parser.add_argument("checkpoint", help="a .ckpt from training or a YoloDetector.save file")
    parser.add_argument("--format", default="pt2", choices=FORMATS,
                        help="pt2 (torch.export) or onnx; both: images -> grid, any batch and size (default: pt2)")
    parser.add_argument("--out", default=None, help="file to write (default: next to the checkpoint, .pt2 or .onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help=f"onnx only (default: {ONNX_OPSET})")
    parser.add_argument("--no-check", action="store_true", help="skip the parity check against the eager model")


def run(args: argparse.Namespace) -> None:
    """Export as ``args`` say, then print the parity check against the eager model."""
    if args.format not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {args.format!r}")
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else checkpoint.with_suffix(SUFFIXES[args.format])
    if same_file(checkpoint, out):
        raise ValueError(f"--out {out} is the checkpoint itself; choose another file")
    _check_out(out, args.overwrite)
    model = load_detector(checkpoint, "cpu")
    if args.format == "pt2":
        path = export_pt2(model, out, overwrite=args.overwrite)
    else:
        path = export_onnx(model, out, args.opset, overwrite=args.overwrite)
    config = model.config
    print(f"wrote {path} ({args.format}: images [N, 3, H, W] -> {describe_output(config)}; "
          f"trained at {config.image_size} px)")
    if not args.no_check:
        _check_parity(model, path)


def _check_parity(model: YoloDetector, path: Path) -> None:
    """Print the parity of the file with the eager model at two sizes; ``RuntimeError`` beyond 1e-3 px."""
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((480, 640), (300, 200))]
    photos += [read_image(p) for p in sample_photos()]
    stride, size = model.config.cell_size, model.config.image_size
    result = parity(model, load_exported(path), photos, (None, (size, size + 4 * stride)))
    ok = result["same_counts"] and result["max_abs_box"] < 1e-3 and result["max_abs_score"] < 1e-4
    print(f"parity vs eager: {result}; within tolerance: {ok}")
    if not ok:
        raise RuntimeError(f"exported model {path} differs from the eager model: {result}")
