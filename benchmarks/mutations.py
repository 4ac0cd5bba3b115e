"""mutations: plant realistic bugs in scratchdet one at a time and check that the tests catch each.

    python benchmarks/mutations.py [--only NAME ...] [--list] [--notebooks | --notebooks-only] [--timeout 600]
                                   [--quick] [--threads 1]

A mutation set grades the tests, not the code: each mutant is one bug a person
could plausibly write (x and y swapped, ``>`` for ``>=``, a missing square, a
weight dropped), given as ``(name, file, original snippet, replacement, test
files)``. For each mutant, one at a time:

1. the file is edited in place (the snippet must occur exactly once, else the
   run stops naming the mutant: the code moved on and the set must follow);
2. ``pytest -x`` runs the mutant's own unit-test files; if they all pass (the
   mutant survived them) the whole ``tests/`` directory runs, and with
   ``--notebooks`` the notebooks too (nbval, as ``run.sh test`` runs them);
3. the original bytes are written back in a ``finally`` (also on Ctrl-C or
   SIGTERM) and checked to be byte-identical; the file's mtime is restored too,
   and no bytecode is written for the mutant, so no stale ``.pyc`` survives.

``--notebooks-only`` grades the notebooks alone: each mutant runs only against
the notebook that teaches its file (``TEACHING_NOTEBOOK``: grid.py -> 03, loss.py
-> 04, ...), no unit test, and the results go to
``benchmarks/results/mutations_notebooks.json``: does the course's own check
notice when the package it teaches is wrong?

A mutant is *killed* when a test fails or errors (``by``: the first failing
test's node id, ``stage``: unit, tests or notebooks), *survived* when every
run passed; a run that exceeds ``--timeout`` seconds is recorded as
``killed: null`` (outcome ``timeout``). The run refuses to start when
``git status`` shows changes in ``scratchdet/``, so a crash can never lose
anyone's work. Do not run it while another process imports scratchdet (a
training, a notebook): a module it imports during a mutant gets the bug.

Prints one JSON document and, on a full (non ``--quick``) run, writes it to
``benchmarks/results/mutations.json``, merged by mutant name so that an
``--only`` run updates its rows. ``--quick`` touches no file: it checks that
every original snippet occurs exactly once and that every mutated file still
compiles, and lists the mutants with ``killed: null``. ``--list`` prints the set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _timing import benchmark_parser, emit, environment, parse_args
from scratchdet._io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mutations.json"
NOTEBOOK_RESULTS = ROOT / "benchmarks" / "results" / "mutations_notebooks.json"
NOTEBOOK_FLAGS = ["--nbval", "--nbval-current-env", "--nbval-cell-timeout=600",
                  "--nbval-sanitize-with", "tests/nbval_sanitize.cfg"]  # as run.sh test


TEACHING_NOTEBOOK = {  # the notebook that teaches (and checks) each mutated file
    "scratchdet/boxes.py": "notebooks/01_boxes.ipynb",
    "scratchdet/data/transforms.py": "notebooks/02_data.ipynb",
    "scratchdet/grid.py": "notebooks/03_grid_encoding.ipynb",
    "scratchdet/loss.py": "notebooks/04_loss.ipynb",
    "scratchdet/nms.py": "notebooks/07_nms.ipynb",
    "scratchdet/evaluation.py": "notebooks/08_evaluation.ipynb",
    "scratchdet/letterbox.py": "notebooks/09_inference_and_export.ipynb",
    "scratchdet/assign.py": "notebooks/11_beyond_v1.ipynb",
    "scratchdet/fpn.py": "notebooks/11_beyond_v1.ipynb",
    "scratchdet/fpn_loss.py": "notebooks/11_beyond_v1.ipynb",
}


@dataclass(frozen=True)
class Mutant:
    """One planted bug: ``original`` (exactly once in ``file``) becomes ``replacement``."""

    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    bug: str


def _m(name, file, original, replacement, tests, bug) -> Mutant:
    return Mutant(name, f"scratchdet/{file}", original, replacement, tuple(f"tests/{t}" for t in tests), bug)


MUTANTS = (
    # grid.py: encoding and decoding of the v1 grid
    _m("grid_xy_offsets_swapped", "grid.py",
       "    offsets = grid_xy - cell  # (T, 2) in [0, 1]\n",
       "    offsets = (grid_xy - cell)[:, [1, 0]]  # (T, 2) in [0, 1], (y, x) like (row, col)\n",
       ["test_grid.py"], "cell offsets written as (y, x), in the order of (row, col)"),
    _m("grid_cell_off_by_one", "grid.py",
       "cell = grid_xy.floor().clamp(0, num_cells - 1)",
       "cell = grid_xy.floor().clamp(0, num_cells)",
       ["test_grid.py"], "a centre on the right or bottom edge gets cell S, one past the last"),
    _m("grid_decode_cells_one_based", "grid.py",
       "cols = torch.arange(sw, dtype=xy.dtype, device=xy.device)",
       "cols = torch.arange(1, sw + 1, dtype=xy.dtype, device=xy.device)",
       ["test_grid.py"], "decoding counts columns from 1"),
    _m("grid_decode_sqrt_not_squared", "grid.py",
       "_cells_to_boxes(cells[..., 0:2], cells[..., 2:4].square(), config.num_cells)",
       "_cells_to_boxes(cells[..., 0:2], cells[..., 2:4], config.num_cells)",
       ["test_grid.py"], "decode_grid forgets that the network predicts sqrt(w), sqrt(h)"),
    _m("grid_wh_normalised_by_hw", "grid.py",
       "wh = (boxes[:, 2:] - boxes[:, :2]) / boxes.new_tensor([w, h])",
       "wh = (boxes[:, 2:] - boxes[:, :2]) / boxes.new_tensor([h, w])",
       ["test_grid.py"], "sizes divided by (height, width) instead of (width, height)"),
    # nms.py
    _m("nms_ge_for_gt", "nms.py",
       "drop = inter.div_(union).gt_(_lower_thresholds(",
       "drop = inter.div_(union).ge_(_lower_thresholds(",
       ["test_nms.py"], "IoU >= threshold suppresses (torchvision: >); at 0, disjoint boxes suppress"),
    _m("nms_threshold_wrong_side", "nms.py",
       "    return inter.div_(union).gt_(threshold)\n",
       "    return inter.div_(union).lt_(threshold)\n",
       ["test_nms.py"], "beyond one block (> 256 boxes) the boxes *below* the threshold are dropped"),
    # loss.py
    _m("loss_noobj_weight_dropped", "loss.py",
       '"noobj": config.lambda_noobj * ((1 - resp_f) * conf.square()).sum() / n,',
       '"noobj": ((1 - resp_f) * conf.square()).sum() / n,',
       ["test_loss.py"], "lambda_noobj left out of the no-object term"),
    _m("loss_responsible_by_index", "loss.py",
       "best = torch.where(iou.amax(-1) > 0, iou.argmax(-1), dist.argmin(-1))",
       "best = torch.zeros_like(dist.argmin(-1))",
       ["test_loss.py"], "the first predictor of a cell is responsible, not the best IoU"),
    _m("loss_wh_target_not_sqrt", "loss.py",
       "wh_err = (cells[..., 2:4] - face[..., 2:4].sqrt())",
       "wh_err = (cells[..., 2:4] - face[..., 2:4])",
       ["test_loss.py"], "sqrt(w), sqrt(h) predictions compared with w, h"),
    # letterbox.py and the Albumentations transforms
    _m("letterbox_inverse_multiplies", "letterbox.py",
       "clip_boxes(boxes / boxes.new_tensor([sx, sy, sx, sy])",
       "clip_boxes(boxes * boxes.new_tensor([sx, sy, sx, sy])",
       ["test_letterbox.py"], "the way back multiplies by the scale instead of dividing"),
    _m("letterbox_fills_instead_of_fits", "letterbox.py",
       "factor = min(th / h, tw / w)",
       "factor = max(th / h, tw / w)",
       ["test_letterbox.py"], "the photo is scaled to cover the input, not to fit in it"),
    _m("eval_transform_pads_centred", "data/transforms.py",
       '_fit_and_pad(_check_size(image_size), "top_left")',
       '_fit_and_pad(_check_size(image_size), "center")',
       ["test_transforms.py", "test_letterbox.py"], "eval letterbox centred: the inverse then needs an offset"),
    # evaluation.py
    _m("ap_without_envelope", "evaluation.py",
       "mpre = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]",
       "mpre = np.concatenate([[0.0], precision, [0.0]])",
       ["test_evaluation.py"], "all-point AP on the raw precision, without the envelope"),
    _m("eval_face_matched_twice", "evaluation.py",
       "free = ~taken & (ious[d] >= thresholds[:, None])",
       "free = ious[d] >= thresholds[:, None]",
       ["test_evaluation.py"], "a face already matched can match a second detection"),
    _m("pr_curve_ascending_scores", "evaluation.py",
       '    order = np.argsort(-scores, kind="stable")\n    order = order[keep[order]]\n',
       '    order = np.argsort(scores, kind="stable")\n    order = order[keep[order]]\n',
       ["test_evaluation.py"], "the precision/recall curve walks from the lowest score up"),
    # boxes.py
    _m("iou_union_keeps_intersection", "boxes.py",
       "return inter, box_area(boxes1) + box_area(boxes2) - inter",
       "return inter, box_area(boxes1) + box_area(boxes2)",
       ["test_boxes.py"], "the union counts the intersection twice"),
    _m("cxcywh_half_size_missing", "boxes.py",
       "return torch.stack((a - c / 2, b - d / 2, a + c / 2, b + d / 2), dim=-1)",
       "return torch.stack((a - c, b - d, a + c, b + d), dim=-1)",
       ["test_boxes.py"], "cxcywh -> xyxy with the full size on each side of the centre"),
    _m("clip_x_by_height", "boxes.py",
       "x = boxes[..., 0::2].clamp(0, w)",
       "x = boxes[..., 0::2].clamp(0, h)",
       ["test_boxes.py"], "x clipped to the image height"),
    # the fpn head: assign.py, fpn.py, fpn_loss.py
    _m("fpn_level_boundary", "assign.py",
       "return torch.bucketize(size, limits, right=True)",
       "return torch.bucketize(size, limits, right=False)",
       ["test_assign.py"], "a face exactly at stride x level_size stays on the finer level"),
    _m("fpn_decode_offset_sign", "fpn.py",
       "cx = (x + 0.5 + 2 * raw[..., 1].sigmoid() - 1) * stride",
       "cx = (x - 0.5 + 2 * raw[..., 1].sigmoid() - 1) * stride",
       ["test_fpn.py"], "x centres measured from half a cell left of the cell, not its centre"),
    _m("fpn_decode_stride_missing", "fpn.py",
       "half_w = raw[..., 3].clamp(max=MAX_LOG_SIZE).exp() * (stride / 2)",
       "half_w = raw[..., 3].clamp(max=MAX_LOG_SIZE).exp() / 2",
       ["test_fpn.py"], "widths in cells, not pixels: the stride is missing"),
    _m("fpn_quality_target_not_detached", "fpn_loss.py",
       "target = box_iou_paired(pred.detach(), faces).clamp(0, 1)",
       "target = box_iou_paired(pred, faces).clamp(0, 1)",
       ["test_fpn.py"], "the score's IoU target passes gradients back into the boxes"),
)


def _select(names: list[str] | None) -> list[Mutant]:
    if not names:
        return list(MUTANTS)
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown mutant(s) {unknown}; --list shows the {len(known)} names")
    return [known[n] for n in names]


def _mutated(mutant: Mutant, source: str) -> str:
    """The file's text with the mutant planted; a clear error unless the snippet occurs exactly once."""
    count = source.count(mutant.original)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name!r}: its original snippet occurs {count} times in {mutant.file} "
                         f"(must be exactly once: the code moved on, update the mutant)\n{mutant.original!r}")
    text = source.replace(mutant.original, mutant.replacement)
    compile(text, mutant.file, "exec")  # a mutant must still import: a SyntaxError here is the set's bug
    return text


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--", "scratchdet"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()


def _check_clean() -> None:
    status = _git_status()
    if status:
        raise SystemExit("refusing to plant mutants: scratchdet/ has uncommitted changes (commit or stash "
                         f"them first, so that nothing can be lost):\n{status}")


def _first_failure(output: str) -> str | None:
    for line in output.splitlines():
        for tag in ("FAILED ", "ERROR "):
            if line.startswith(tag):
                return line[len(tag):].split(" - ", 1)[0].strip()
    return None


def _pytest(paths: list[str], extra: list[str], timeout: float, threads: int) -> tuple[str, str | None]:
    """Run pytest on ``paths`` -> (``"passed"``, ``"failed"`` or ``"timeout"``, first failing node id)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               NO_ALBUMENTATIONS_UPDATE="1", MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", *extra, *paths]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own group: a timeout ends nbval's kernels too
    try:
        output, _ = proc.communicate(timeout=timeout)
    except BaseException as exc:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this call started, nothing else
        except ProcessLookupError:
            pass
        proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            return "timeout", None
        raise
    if proc.returncode == 0:
        return "passed", None
    if proc.returncode in (1, 2):  # tests failed, or collection / import errors: the tests noticed
        return "failed", _first_failure(output) or f"pytest exit {proc.returncode}"
    raise RuntimeError(f"pytest {' '.join(paths)} ended with exit code {proc.returncode}:\n{output[-3000:]}")


def _stages(mutant: Mutant, notebooks: bool | str) -> list[tuple[str, list[str], list[str]]]:
    """The pytest runs for ``mutant``: unit tests, all tests, notebooks; ``notebooks="only"``: its notebook."""
    if notebooks == "only":
        return [("notebook", [TEACHING_NOTEBOOK[mutant.file]], NOTEBOOK_FLAGS)]
    # the mutation set's own --quick check fails on any planted mutant (its snippet is gone): not a killer
    self_check = "tests/test_benchmarks.py::test_benchmark_quick_run_prints_json[mutations]"
    stages = [("unit", list(mutant.tests), []), ("tests", ["tests"], ["--deselect", self_check])]
    if notebooks:
        stages.append(("notebooks", ["notebooks"], NOTEBOOK_FLAGS))
    return stages


def _restore(path: Path, original: bytes, stat: os.stat_result) -> None:
    """Write the original bytes back (Ctrl-C ignored meanwhile), restore the mtime, check the bytes."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    finally:
        signal.signal(signal.SIGINT, previous)
    if path.read_bytes() != original:
        raise SystemExit(f"{path} is NOT byte-identical to its original after restoring: "
                         "check it with git diff before anything else")


def run_mutant(mutant: Mutant, notebooks: bool | str, timeout: float, threads: int) -> dict:
    """Plant ``mutant``, run its test stages until one fails, restore the file."""
    path = ROOT / mutant.file
    original, stat = path.read_bytes(), path.stat()
    mutated = _mutated(mutant, original.decode("utf-8")).encode("utf-8")
    start, row = time.perf_counter(), {"name": mutant.name, "file": mutant.file, "tests": list(mutant.tests)}
    try:
        path.write_bytes(mutated)
        outcome, by, stage = "survived", None, None
        for stage_name, paths, extra in _stages(mutant, notebooks):
            print(f"  {mutant.name}: {stage_name} ({' '.join(paths)})", file=sys.stderr, flush=True)
            result, by = _pytest(paths, extra, timeout, threads)
            if result != "passed":
                outcome, stage = ("killed" if result == "failed" else "timeout"), stage_name
                break
    finally:
        _restore(path, original, stat)
    killed = {"killed": True, "survived": False, "timeout": None}[outcome]
    return {**row, "killed": killed, "outcome": outcome, "by": by, "stage": stage,
            "seconds": round(time.perf_counter() - start, 1), "bug": mutant.bug}


def _quick_row(mutant: Mutant) -> dict:
    _mutated(mutant, (ROOT / mutant.file).read_bytes().decode("utf-8"))
    notebook = TEACHING_NOTEBOOK.get(mutant.file)
    if notebook is None or not (ROOT / notebook).is_file():
        raise SystemExit(f"mutant {mutant.name}: no teaching notebook for {mutant.file} ({notebook}); "
                         "add it to TEACHING_NOTEBOOK")
    return {"name": mutant.name, "file": mutant.file, "tests": list(mutant.tests), "killed": None,
            "outcome": "not run", "by": None, "stage": None, "seconds": None, "bug": mutant.bug}


def _merge(rows: list[dict], results: Path = RESULTS) -> list[dict]:
    """Earlier results updated with ``rows``, in the set's order (rows of removed mutants dropped)."""
    old = json.loads(results.read_text()).get("mutants", []) if results.exists() else []
    by_name = {r["name"]: r for r in old} | {r["name"]: r for r in rows}
    return [by_name[m.name] for m in MUTANTS if m.name in by_name]


def _summary(rows: list[dict]) -> dict:
    return {"mutants": len(rows), "killed": sum(r["killed"] is True for r in rows),
            "survived": [r["name"] for r in rows if r["killed"] is False],
            "timed_out": [r["name"] for r in rows if r["outcome"] == "timeout"]}


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # so that the finally clauses restore the file


def main() -> None:
    parser = benchmark_parser(__doc__, "touch no file: check every mutant's snippet and that it compiles, run nothing")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants (results merge by name)")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--notebooks", action="store_true", help="also run the notebooks (nbval) on survivors")
    parser.add_argument("--notebooks-only", action="store_true",
                        help="run each mutant against its teaching notebook only (results: mutations_notebooks.json)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default: 600)")
    args = parse_args(parser)
    if args.notebooks and args.notebooks_only:
        parser.error("--notebooks and --notebooks-only exclude each other")
    notebooks, results = ("only", NOTEBOOK_RESULTS) if args.notebooks_only else (args.notebooks, RESULTS)
    mutants = _select(args.only)
    if args.list:
        for m in mutants:
            print(f"{m.name:34} {m.file:30} {' '.join(m.tests):45} {m.bug}")
        return
    if args.quick:
        emit({"benchmark": "mutations", "quick": True, "environment": environment(args.threads),
              "mutants": [_quick_row(m) for m in MUTANTS], "summary": None})
        return
    _check_clean()
    for m in mutants:  # every snippet checked before the first file is touched
        _mutated(m, (ROOT / m.file).read_bytes().decode("utf-8"))
    signal.signal(signal.SIGTERM, _interrupt)
    rows = []
    for i, m in enumerate(mutants, 1):
        print(f"[{i}/{len(mutants)}] {m.name} ({m.file})", file=sys.stderr, flush=True)
        rows.append({**run_mutant(m, notebooks, args.timeout, args.threads), "commit": _commit()})
        print(f"  -> {rows[-1]['outcome']} {rows[-1]['by'] or ''} ({rows[-1]['seconds']} s)", file=sys.stderr)
    merged = _merge(rows, results)
    result = {"benchmark": "mutations", "notebooks": notebooks, "timeout_s": args.timeout,
              "environment": environment(args.threads), "summary": _summary(merged), "mutants": merged}
    atomic_write_text(results, json.dumps(result, indent=2) + "\n")
    emit(result)
    if _git_status():  # each mutated file was checked byte-identical: these changes are not ours
        print(f"warning: scratchdet/ changed during the run (not by a mutant):\n{_git_status()}", file=sys.stderr)


if __name__ == "__main__":
    main()
