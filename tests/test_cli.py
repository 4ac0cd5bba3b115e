"""The scratchdet command line: train, evaluate, demo and its one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchdet.cli import main
from scratchdet.config import DetectorConfig
from scratchdet.model import YoloDetector

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--config", "smoke", "--data.train_size", "8", "--data.val_size", "4", "--trainer.max_epochs", "1",
        "--threads", "1"]


def run_cli(args, capsys):
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    status = main(["train", *TINY, "--data.root", str(root / "data"), "--output_dir", str(root / "run")])
    assert status == 0
    return root


def test_train_writes_checkpoints_and_logs(trained):
    assert (trained / "run" / "checkpoints" / "best.ckpt").exists()
    assert (trained / "run" / "checkpoints" / "last.ckpt").exists()
    assert (trained / "run" / "logs" / "version_0" / "metrics.csv").exists()


def test_evaluate_writes_metrics_json(trained, capsys):
    out = trained / "metrics.json"
    status, stdout, _ = run_cli(["evaluate", str(trained / "run" / "checkpoints" / "best.ckpt"),
                                 "--data-root", str(trained / "data"), "--num-images", "6",
                                 "--out", str(out)], capsys)
    assert status == 0
    metrics = json.loads(out.read_text())
    for key in ("ap50", "ap50_small", "ap50_medium", "ap50_large", "ap50_ge24", "num_images"):
        assert key in metrics
    assert metrics["num_images"] == 6 and 0.0 <= metrics["ap50"] <= 1.0


@pytest.mark.parametrize("args,match", [
    (["train", "--model.backbone", "nope"], "unknown backbone 'nope'"),
    (["train", "--data.dataset", "imagenet"], "dataset must be one of"),
    (["train", "--data.dataset", "wider", "--data.wider_root", "/nonexistent/wider"], "/nonexistent/wider"),
    (["train", "--model.config.image_size", "100", "--model.config.num_cells", "8"], "not divisible"),
    (["train", "--trainer.max_epochs", "many"], "trainer.max_epochs"),
    (["train", "--trainer.max_epochs", "-1"], "train forever"),
    (["train", "--trainer.max_epochs", "0"], "positive number of epochs"),
    (["train", "--trainer.max_time", "00:00:-5:00"], "positive duration"),
    (["train", "--trainer.accelerator", "gpu"], "gpu"),
    (["train", "--trainer.devices", "0"], "devices"),
    (["train", "--trainer.overfit_batches", "-1"], "overfit_batches"),
    (["train", "--model.lr", "inf"], "model.lr"),
    (["train", "--model.config.lambda_coord", "nan"], "lambda_coord"),
    (["train", "--model.preset", "huge"], "model.preset"),
    (["train", "--config", "/nonexistent.yaml"], "no recipe"),
    (["evaluate", "/nonexistent.ckpt"], "does not exist"),
])
def test_user_errors_are_one_line(args, match, capsys, tmp_path):
    if torch.cuda.is_available() and "gpu" in args:
        pytest.skip("a GPU is here")
    args = args + ["--output_dir", str(tmp_path / "run")] if args[0] == "train" else args
    status, _, err = run_cli(args, capsys)
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"scratchdet {args[0]}: error:")
    assert match.lower() in err.lower(), err


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 0.1\n")
    status, _, err = run_cli(["train", "--config", str(cfg)], capsys)
    assert status == 2 and "learning_rate" in err and err.count("\n") == 1


def test_incompatible_checkpoint(tmp_path, capsys):
    model = YoloDetector(DetectorConfig(image_size=64, num_cells=4), preset="small")
    state = model.state_dict()
    state.pop(next(iter(state)))
    path = tmp_path / "broken.pt"
    torch.save({**model.hyperparameters, "state_dict": state}, path)
    status, _, err = run_cli(["evaluate", str(path)], capsys)
    assert status == 2 and "Traceback" not in err and err.count("\n") == 1


def test_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"not a checkpoint")
    status, _, err = run_cli(["evaluate", str(path)], capsys)
    assert status == 2 and err.count("\n") == 1


def test_module_entry_point_exit_status():
    proc = subprocess.run([sys.executable, "-m", "scratchdet", "train", "--model.backbone", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "unknown backbone" in proc.stderr


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    status, stdout, _ = run_cli(["demo", "--quick", "--no-progress", "--output-dir", str(out),
                                  "--data-root", str(tmp_path / "data")], capsys)
    assert status == 0, stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("ap50", "ap50_small", "ap50_medium", "ap50_large", "ap50_ge24", "train_seconds",
                "images_per_second"):
        assert key in metrics
    assert (out / "curves.png").exists() and (out / "model.pt").exists()
    assert any((out / "detections").glob("grace_hopper.jpg"))
    assert "AP50" in stdout


def test_evaluate_wider_out_needs_wider(trained, capsys):
    status, _, err = run_cli(["evaluate", str(trained / "run" / "checkpoints" / "best.ckpt"),
                              "--data-root", str(trained / "data"), "--num-images", "2",
                              "--wider-out", str(trained / "wider")], capsys)
    assert status == 2 and "needs a WIDER FACE dataset" in err


def test_evaluate_on_a_wider_fixture_writes_official_files(trained, tmp_path, capsys):
    import cv2
    import numpy as np

    root = tmp_path / "wider"
    split = root / "wider_face_split"
    split.mkdir(parents=True)
    lines = []
    for k, name in enumerate(["0--Parade/0_Parade_1.jpg", "1--Handshaking/1_Handshaking_2.jpg"]):
        path = root / "WIDER_val" / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((48, 80, 3), 90 + 40 * k, np.uint8))
        lines += [name, "1", "10 8 20 24 0 0 0 0 0 0"]
    (split / "wider_face_val_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    for other in ("WIDER_train", "WIDER_test"):
        (root / other / "images").mkdir(parents=True)
    out = tmp_path / "preds"
    status, stdout, err = run_cli(["evaluate", str(trained / "run" / "checkpoints" / "best.ckpt"),
                                   "--dataset", "wider", "--wider-root", str(root), "--split", "val",
                                   "--wider-out", str(out)], capsys)
    assert status == 0, err
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt"))
    assert files == ["0--Parade/0_Parade_1.txt", "1--Handshaking/1_Handshaking_2.txt"]
    first = (out / files[0]).read_text().splitlines()
    assert first[0] == "0_Parade_1" and int(first[1]) == len(first) - 2


def test_detect_and_export_subcommands(trained, tmp_path, capsys):
    import cv2
    import numpy as np

    checkpoint = str(trained / "run" / "checkpoints" / "best.ckpt")
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.full((50, 70, 3), 128, np.uint8))
    status, stdout, err = run_cli(["detect", str(image), "--checkpoint", checkpoint, "--out", str(tmp_path / "det"),
                                   "--no-progress"], capsys)
    assert status == 0, err
    assert list((tmp_path / "det").glob("*.json"))
    status, stdout, err = run_cli(["export", checkpoint, "--format", "pt2",
                                   "--out", str(tmp_path / "m.pt2")], capsys)
    assert status == 0, err
    assert (tmp_path / "m.pt2").exists()
    status, _, err = run_cli(["detect", str(tmp_path / "missing.jpg"), "--checkpoint", checkpoint], capsys)
    assert status == 2 and err.count("\n") == 1 and "missing.jpg" in err


def test_train_help_describes_every_key(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for key, words in [("--model.config.lambda_obj", "confidence term"), ("--model.lr", "peak learning rate"),
                       ("--data.train_size", "number of training images"), ("--output_dir", "run folder"),
                       ("--resume", "last.ckpt"), ("--trainer.max_time", None), ("--model.preset", "small,medium,large")]:
        assert key in text, key
        if words:
            assert words in text, words


def test_evaluate_refuses_out_onto_its_checkpoint(trained, capsys):
    checkpoint = trained / "run" / "checkpoints" / "best.ckpt"
    before = checkpoint.read_bytes()
    status, _, err = run_cli(["evaluate", str(checkpoint), "--out", str(checkpoint)], capsys)
    assert status == 2 and "is the checkpoint" in err
    assert checkpoint.read_bytes() == before


def test_evaluate_num_images_beyond_the_split_is_an_error(trained, capsys):
    status, _, err = run_cli(["evaluate", str(trained / "run" / "checkpoints" / "best.ckpt"), "--data-root",
                              str(trained / "data"), "--num-images", "100000"], capsys)
    assert status == 2 and "more than the 500 images" in err and err.count("\n") == 1


def test_evaluate_at_another_input_size(trained, capsys):
    status, stdout, err = run_cli(["evaluate", str(trained / "run" / "checkpoints" / "best.ckpt"), "--data-root",
                                   str(trained / "data"), "--num-images", "4", "--image-size", "96"], capsys)
    assert status == 0, err
    assert json.loads(stdout)["num_images"] == 4


def test_demo_photos_use_the_bundled_model_and_fall_back_to_the_trained_one(tmp_path, monkeypatch):
    from scratchdet.config import DEFAULT_MODEL
    from scratchdet.demo import photo_model

    trained = YoloDetector.from_checkpoint(ROOT / "models" / "synthfaces_poolresnet_medium.pt")
    monkeypatch.setenv("SCRATCHDET_MODEL", str(ROOT / "models" / "synthfaces_fpn_poolresnet_medium.pt"))
    model, which = photo_model(trained)
    assert model is not trained and model.config.head == "fpn" and "synthfaces_fpn_poolresnet_medium.pt" in which
    monkeypatch.setenv("SCRATCHDET_MODEL", str(tmp_path / "missing.pt"))
    model, which = photo_model(trained)
    assert model is trained and "no bundled model" in which
    monkeypatch.delenv("SCRATCHDET_MODEL")
    if DEFAULT_MODEL.is_file():
        model, which = photo_model(trained)
        assert DEFAULT_MODEL.name in which and model.hyperparameters["backbone"] == "mobilenet_v2"
