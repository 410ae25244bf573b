"""models.train end to end on generated phantoms: it learns, it resumes, it runs under DDP (gloo).

The trained runs come from session fixtures in conftest.py (phantom_run, resumed_run), so each
training happens once per session. Every test here trains or needs a trained model: all are `slow`.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import PHANTOM_EPOCHS, PHANTOM_N, repo_env
from models.checkpoint import load_model
from models.data import SPLIT_NAMES, load_images, read_labels, read_split
from models.train import lr_at, predict_arrays

pytestmark = pytest.mark.slow

# Measured on this phantom set (w035-100, 10 epochs, batch 32): see the report printed by
# test_phantom_training_beats_the_mean_baseline. The margin leaves room for run-to-run variation.
MAX_MAE_RATIO = 0.6


def _split_labels(run, part):
    labels = read_labels(run / f"phantoms-{PHANTOM_N}")
    return labels.subset(read_split(run / "split.json")[part])


def _mae_vs_baseline(run, part):
    model, ckpt = load_model(run / "best.pt")
    train, target = _split_labels(run, "train"), _split_labels(run, part)
    x = load_images(target.paths(), model.cfg.input, progress=False)
    age, _ = predict_arrays(model, x)
    mae = float(np.mean(np.abs(age - target.age)))
    baseline = float(np.mean(np.abs(train.age.mean() - target.age)))  # predict the training mean
    return mae, baseline, ckpt


# ---------------------------------------------------------------- it learns

def test_phantom_training_beats_the_mean_baseline(phantom_run):
    mae, baseline, ckpt = _mae_vs_baseline(phantom_run, "val")
    history = json.loads((phantom_run / "history.json").read_text())
    print(f"\nphantom val MAE {mae:.2f} months vs predict-the-mean {baseline:.2f} "
          f"(ratio {mae / baseline:.2f}); per-epoch val MAE {[round(r['val_mae'], 1) for r in history]}")
    assert mae < MAX_MAE_RATIO * baseline, f"val MAE {mae:.2f} vs baseline {baseline:.2f}"
    # best.pt (fp16 weights) reproduces the validation MAE recorded when it was saved (fp32).
    assert mae == pytest.approx(ckpt["val_metrics"]["mae"], abs=0.5)
    assert ckpt["val_metrics"]["mae"] == pytest.approx(min(r["val_mae"] for r in history))


def test_phantom_model_generalises_to_the_held_out_test_split(phantom_run):
    mae, baseline, _ = _mae_vs_baseline(phantom_run, "test")
    print(f"\nphantom test-split MAE {mae:.2f} months vs predict-the-mean {baseline:.2f} (ratio {mae / baseline:.2f})")
    assert mae < MAX_MAE_RATIO * baseline, f"test MAE {mae:.2f} vs baseline {baseline:.2f}"


def test_run_folder_contents(phantom_run):
    history = json.loads((phantom_run / "history.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, PHANTOM_EPOCHS + 1))
    assert all(np.isfinite(r["loss"]) for r in history)
    assert history[-1]["loss"] < history[0]["loss"]

    split = read_split(phantom_run / "split.json")
    ids = [set(split[k]) for k in SPLIT_NAMES]
    assert sum(map(len, ids)) == PHANTOM_N and len(set().union(*ids)) == PHANTOM_N
    assert [round(len(s) / PHANTOM_N, 1) for s in ids] == [0.7, 0.2, 0.1]

    log = (phantom_run / "train.log").read_text()
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert step in log
    assert "resumed" not in log

    state = torch.load(phantom_run / "last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == PHANTOM_EPOCHS and state["history"] == history
    assert {"model", "optimizer", "rng", "config", "best_val_mae"} <= set(state)


def test_checkpoint_carries_the_config(phantom_run):
    model, ckpt = load_model(phantom_run / "best.pt")
    assert not model.training
    train = _split_labels(phantom_run, "train")
    cfg = model.cfg
    assert cfg.name == "boneage-inception-v3-se-w035" and cfg.width == 0.35
    assert cfg.to_dict() == ckpt["config"]
    # Age standardisation comes from the training split, not from defaults.
    assert cfg.age_mean == pytest.approx(float(train.age.mean()), rel=1e-6)
    assert cfg.age_std == pytest.approx(float(train.age.std()), rel=1e-6)
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())


# ---------------------------------------------------------------- it resumes

def test_resume_continues_where_it_stopped(resumed_run):
    out, first = resumed_run["out"], resumed_run["first"]
    assert [r["epoch"] for r in first["history"]] == [1, 2]
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[:2] == first["history"]  # the first two epochs were not retrained

    log = (out / "train.log").read_text()
    second = log[len(first["log"]):]
    assert "resumed" not in first["log"]
    assert f"resumed from {out / 'last.pt'} after epoch 2" in second
    assert '"epoch": 3' in second and '"epoch": 1,' not in second and '"epoch": 2,' not in second

    before = torch.load(out / "last-after-2.pt", map_location="cpu", weights_only=False)
    after = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert before["epoch"] == 2 and after["epoch"] == 3
    changed = [k for k, v in after["model"].items() if v.is_floating_point() and not torch.equal(v, before["model"][k])]
    assert changed, "the resumed epoch did not train"


def test_resume_continues_the_lr_schedule(resumed_run):
    history = json.loads((resumed_run["out"] / "history.json").read_text())
    # 200 phantoms -> 140 train -> 4 steps of 32 per epoch, 1 warm-up epoch, cosine to 0 at the end.
    steps, base = 140 // 32, 2e-3
    assert history[-1]["lr"] == pytest.approx(base * lr_at(3 * steps, 3 * steps, steps), abs=1e-12)
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # a restarted schedule would be back at 2e-3


# ---------------------------------------------------------------- it runs distributed

def test_ddp_two_processes_on_gloo(tmp_path, repo_root):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "models.train", "--synthetic", "200", "--out", str(out), "--model", "w035-100",
           "--epochs", "1", "--batch-size", "32", "--threads", "1", "--no-progress"]
    proc = subprocess.run(cmd, cwd=repo_root, env=repo_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    history = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1]
    log = (out / "train.log").read_text()
    assert "x 2 process(es)" in log
    assert log.count("[1/4]") == 1  # only rank 0 logs
    model, _ = load_model(out / "best.pt")
    assert model.cfg.width == 0.35


def test_resume_restores_the_weight_average(resumed_run):
    before = torch.load(resumed_run["out"] / "last-after-2.pt", map_location="cpu", weights_only=False)
    after = torch.load(resumed_run["out"] / "last.pt", map_location="cpu", weights_only=False)
    # 140 train phantoms, batch 32: 4 steps an epoch; the count carries over instead of restarting.
    assert before["ema"]["updates"] == 2 * 4 and after["ema"]["updates"] == 3 * 4


def test_best_checkpoint_holds_the_averaged_weights(resumed_run):
    best = torch.load(resumed_run["out"] / "best.pt", map_location="cpu", weights_only=False)
    # The training state saved at the end of the epoch best.pt comes from.
    saved = {2: "last-after-2.pt", 3: "last.pt"}
    if best["epoch"] not in saved:
        pytest.skip(f"best.pt is from epoch {best['epoch']}, whose training state was not kept")
    last = torch.load(resumed_run["out"] / saved[best["epoch"]], map_location="cpu", weights_only=False)
    key = "age_head.weight"
    assert torch.allclose(best["model"][key].float(), last["ema"]["model"][key], atol=1e-3)
    assert not torch.allclose(last["ema"]["model"][key], last["model"][key])


def test_init_from_with_a_new_net_size_keeps_the_weights(phantom_run, tmp_path):
    from models.train import main

    out = tmp_path / "upsized"
    assert main(["--synthetic", "40", "--out", str(out), "--init-from", str(phantom_run / "best.pt"),
                 "--net-size", "112", "--epochs", "1", "--batch-size", "16", "--lr", "0", "--ema", "0",
                 "--no-progress", "--no-augment"]) == 0
    parent, _ = load_model(phantom_run / "best.pt")
    child, _ = load_model(out / "best.pt")
    assert parent.cfg.net_size == 0 and child.cfg.net_size == 112
    # lr 0: only BatchNorm running statistics may move; every learned weight is the parent's.
    for (name, a), b in zip(parent.named_parameters(), child.parameters()):
        assert torch.allclose(a, b, atol=1e-3), name


def test_checkpoint_tool_changes_weightless_settings_only(phantom_run, tmp_path, capsys):
    from models.checkpoint import main as checkpoint_main
    from models.checkpoint import with_config

    dst = tmp_path / "tta.pt"
    assert checkpoint_main([str(phantom_run / "best.pt"), str(dst), "--flip-tta", "on", "--net-size", "112",
                            "--tta-zooms", "0.95,1.05"]) == 0
    parent, _ = load_model(phantom_run / "best.pt")
    child, ckpt = load_model(dst)
    assert (child.cfg.flip_tta, child.cfg.net_size, child.cfg.tta_zooms) == (True, 112, (0.95, 1.05))
    assert ckpt["derived_from"]["changes"] == {"net_size": 112, "flip_tta": True, "tta_zooms": (0.95, 1.05)}
    for (name, a), b in zip(parent.state_dict().items(), child.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="width: changing these needs new weights"):
        with_config(parent, width=0.25)


def test_augment_p_leaves_the_unchosen_images_as_inference_sees_them():
    from models.augment import augment_batch
    torch.manual_seed(0)
    x = torch.randn(64, 1, 32, 32)
    assert torch.allclose(augment_batch(x, p=0.0), x, atol=1e-4)
    changed = (augment_batch(x, p=0.5) - x).flatten(1).abs().amax(1) > 1e-3
    assert 16 <= int(changed.sum()) <= 48  # about half, never all or none
    assert bool(((augment_batch(x, p=1.0) - x).flatten(1).abs().amax(1) > 1e-3).all())


@pytest.mark.parametrize("share", ["-0.1", "1.5"])
def test_augment_p_outside_0_1_is_refused(share, capsys):
    from models.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--synthetic", "8", "--out", "x", "--augment-p", share])
    assert "a share must be between 0 and 1" in capsys.readouterr().err


# ---------------------------------------------------------------- distillation

def _loss_grads(w, teacher):
    from types import SimpleNamespace

    from models.train import training_loss
    args = SimpleNamespace(sex_weight=0.5, distill_weight=w)
    age_z = torch.tensor([0.3, -0.2], requires_grad=True)
    logit = torch.tensor([1.0, -1.0], requires_grad=True)
    by_sex = torch.tensor([[0.3, 0.9], [-0.2, 0.4]], requires_grad=True)
    y_a, y_s = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])
    training_loss(age_z, logit, [by_sex], y_a, y_s, args, teacher).backward()
    return age_z.grad, by_sex.grad


def test_distillation_loss_pulls_toward_the_teachers_not_the_labels():
    # The teachers agree exactly with the student's outputs: with all weight on them nothing moves the age heads,
    # although the labels (1.0) are far; with no weight on them the labels pull as without teachers.
    teacher = {"age_z": torch.tensor([0.3, -0.2]), "p_male": torch.tensor([0.5, 0.5]),
               "by_sex_z": torch.tensor([[0.3, 0.9], [-0.2, 0.4]])}
    age_grad, by_sex_grad = _loss_grads(1.0, teacher)
    assert torch.allclose(age_grad, torch.zeros(2)) and torch.allclose(by_sex_grad, torch.zeros(2, 2))
    label_age, label_by_sex = _loss_grads(0.0, teacher)
    assert torch.equal(label_age, _loss_grads(0.0, None)[0]) and bool((label_age < 0).all())
    # Labels reach only the true sex's column; the teachers also teach the other one.
    assert label_by_sex[0, 1] == 0 and label_by_sex[1, 0] == 0
    moved = {"age_z": teacher["age_z"], "p_male": teacher["p_male"], "by_sex_z": teacher["by_sex_z"] + 1}
    assert bool((_loss_grads(1.0, moved)[1] != 0).all())


def test_teacher_targets_are_recomputed_when_a_teacher_file_changes(tmp_path):
    from models.train import teacher_key
    teacher = tmp_path / "default.pt"
    teacher.write_bytes(b"weights of one network")
    before = teacher_key([teacher], ["a", "b"], True)
    assert teacher_key([teacher], ["a", "b"], True) == before
    teacher.write_bytes(b"weights of another network")  # same path, new contents
    assert teacher_key([teacher], ["a", "b"], True) != before
    assert teacher_key([teacher], ["a"], True) != teacher_key([teacher], ["a", "b"], True)


def test_distillation_targets_are_the_teachers_mean_prediction(phantom_run, tmp_path):
    from models.train import main

    out = tmp_path / "student"
    teacher = str(phantom_run / "best.pt")
    assert main(["--synthetic", str(PHANTOM_N), "--out", str(out), "--init-from", teacher, "--teachers", teacher,
                 teacher, "--epochs", "1", "--batch-size", "16", "--no-progress"]) == 0
    net, _ = load_model(teacher)
    train = read_labels(out / f"phantoms-{PHANTOM_N}").subset(read_split(out / "split.json")["train"])
    age, p_male = predict_arrays(net, load_images(train.paths(), net.cfg.input, progress=False))
    with np.load(out / "teacher-targets.npz") as t:
        assert np.allclose(t["age_z"] * net.cfg.age_std + net.cfg.age_mean, age, atol=1e-2)
        assert np.allclose(t["p_male"], p_male, atol=1e-4)
    assert "teacher" in (out / "train.log").read_text()


# ---------------------------------------------------------------- it resumes exactly after a kill mid-epoch

def _kill_mid_epoch(cmd: list[str], out, repo_root, timeout: float = 300) -> dict:
    """Run `cmd`, SIGKILL it as soon as its last.pt holds a state from inside an epoch (step > 0), return that state."""
    import time

    proc = subprocess.Popen(cmd, cwd=repo_root, env=repo_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last, seen, deadline = out / "last.pt", None, time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if last.exists() and last.stat().st_mtime_ns != seen:
                seen = last.stat().st_mtime_ns
                state = torch.load(last, map_location="cpu", weights_only=False)  # atomic: never half-written
                if state.get("step", 0) > 0:
                    proc.kill()
                    proc.wait()
                    return state
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
    pytest.fail(f"no mid-epoch checkpoint seen before the run ended (rc {proc.returncode}): "
                f"{proc.stderr.read().decode()[-2000:]}")


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path, repo_root):
    from conftest import PHANTOM_MODEL

    args = ["--synthetic", "300", "--model", PHANTOM_MODEL, "--batch-size", "16", "--epochs", "2",
            "--threads", "1", "--no-progress", "--checkpoint-minutes", "0"]
    cmd = lambda out: [sys.executable, "-m", "models.train", "--out", str(out), *args]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    subprocess.run(cmd(straight), cwd=repo_root, env=repo_env(), check=True, capture_output=True)

    killed_at = _kill_mid_epoch(cmd(broken), broken, repo_root)
    assert killed_at["step"] > 0 and killed_at["epoch"] < 2
    subprocess.run(cmd(broken), cwd=repo_root, env=repo_env(), check=True, capture_output=True)
    assert f"step {killed_at['step']} of epoch {killed_at['epoch'] + 1}" in (broken / "train.log").read_text()

    a = torch.load(straight / "last.pt", map_location="cpu", weights_only=False)
    b = torch.load(broken / "last.pt", map_location="cpu", weights_only=False)
    for part in ("model",):
        assert a[part].keys() == b[part].keys()
        different = [k for k in a[part] if not torch.equal(a[part][k], b[part][k])]
        assert not different, f"{len(different)} tensors differ after the resume, e.g. {different[:3]}"
    different = [k for k in a["ema"]["model"] if not torch.equal(a["ema"]["model"][k], b["ema"]["model"][k])]
    assert not different, f"the weight average differs after the resume: {different[:3]}"
    assert [r["val_mae"] for r in a["history"]] == [r["val_mae"] for r in b["history"]]


# ---------------------------------------------------------------- the GPU script, dry-run on the CPU

def test_gpu_script_dry_run_on_the_cpu(tmp_path, repo_root):
    from models.phantoms import write_phantom_dataset

    data = tmp_path / "phantoms"
    write_phantom_dataset(data, 60, size=96, seed=0)
    out = tmp_path / "gpu"
    cmd = [sys.executable, "-m", "models.gpu_train", "--data", str(data), "--out", str(out), "--device", "cpu",
           "--width", "0.1", "--image-size", "80", "--batch-size", "8", "--max-steps", "3", "--split-file", "",
           "--workers", "2"]
    done = subprocess.run(cmd, cwd=repo_root, env=repo_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and {"epoch_s", "images_per_s", "peak_gpu_gib", "val_mae_sex_given"} <= history[0].keys()
    assert "3 steps" in (out / "gpu-train.log").read_text()
    model, ckpt = load_model(out / "best.pt")
    assert model.cfg.width == 0.1 and model.cfg.input.height == 80 and ckpt["trained_by"] == "models.gpu_train"


def test_gpu_normalisation_is_the_runtime_one():
    from edge.config import InputSpec
    from edge.preprocess import normalize
    from models.gpu_train import gpu_normalize
    from models.inception import MODEL_CONFIGS

    cfg = MODEL_CONFIGS["paper-299"]
    img = np.random.default_rng(0).integers(0, 256, (2, 1, 40, 30), dtype=np.uint8)
    ours = gpu_normalize(torch.from_numpy(img), cfg).numpy()
    for k in range(2):
        np.testing.assert_allclose(ours[k, 0], normalize(img[k, 0].astype(np.float32) / 255, cfg.input), atol=1e-5)
    assert isinstance(cfg.input, InputSpec)


def test_gpu_pack_carries_training_and_validation_images_never_the_test_split(tmp_path):
    from models.data import make_split, write_split
    from models.gpu_train import pack
    from models.phantoms import write_phantom_dataset

    data = tmp_path / "phantoms"
    write_phantom_dataset(data, 40, size=96, seed=0)
    labels = read_labels(data)
    split = make_split(labels, seed=0)
    write_split(split, tmp_path / "split.json", 0, str(data))
    one = labels.paths()[0].stat().st_size
    assert pack(data, str(tmp_path / "split.json"), tmp_path / "packed", part_mb=10.5 * one / 1e6) == 0
    parts = sorted((tmp_path / "packed").glob("part-*"))
    packed = [f.stem for part in parts for f in (part / "images").iterdir()]
    assert sorted(packed) == sorted(split["train"] + split["val"]) and not set(packed) & set(split["test"])
    assert len(parts) > 1 and all((part / "labels.csv").exists() for part in parts)
    assert all(sum(f.stat().st_size for f in (part / "images").iterdir()) <= 10.5 * one * 1.5 for part in parts)
