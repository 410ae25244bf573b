"""models.campaign: the command a leg trains with, resumed or started (the training itself: tests/test_training.py)."""
from __future__ import annotations

from dataclasses import replace

import torch

from models import campaign
from models.checkpoint import load_model, save_weights
from models.inception import MODEL_CONFIGS, BoneAgeNet


def _leg(init: str, **more) -> dict:
    return {"data": "train-299", "args": ["--init-from", init, "--epochs", "1"], **more}


def _init_from(cmd: list[str]) -> str:
    return cmd[cmd.index("--init-from") + 1]


def test_a_widening_leg_starts_from_its_weights_widened_once_into_its_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BONEAGE_CAMPAIGN_DIR", str(tmp_path / "runs"))
    torch.manual_seed(0)
    src = tmp_path / "narrow.pt"
    save_weights(src, BoneAgeNet(replace(MODEL_CONFIGS["w035-100"], width=0.35, sex_heads=True)))
    first = _init_from(campaign.train_command("wide", _leg(str(src), widen=0.5)))
    assert first == str(tmp_path / "runs" / "wide" / "init-width-0.5.pt")
    model, _ = load_model(first)
    assert model.cfg.width == 0.5
    made = (tmp_path / "runs" / "wide" / "init-width-0.5.pt").stat().st_mtime_ns
    assert _init_from(campaign.train_command("wide", _leg(str(src), widen=0.5))) == first  # made once
    assert (tmp_path / "runs" / "wide" / "init-width-0.5.pt").stat().st_mtime_ns == made


def test_a_leg_without_widening_or_with_its_run_folder_keeps_its_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("BONEAGE_CAMPAIGN_DIR", str(tmp_path / "runs"))
    src = str(tmp_path / "narrow.pt")  # never read: nothing is widened
    assert _init_from(campaign.train_command("plain", _leg(src))) == src
    (tmp_path / "runs" / "resumed").mkdir(parents=True)
    (tmp_path / "runs" / "resumed" / "last.pt").write_bytes(b"")  # a run under way resumes from its own state
    cmd = campaign.train_command("resumed", _leg(src, widen=0.5))
    assert _init_from(cmd) == src and not (tmp_path / "runs" / "resumed" / "init-width-0.5.pt").exists()
    assert cmd[cmd.index("--threads") + 1] == "1" and cmd[cmd.index("--out") + 1] == str(tmp_path / "runs" / "resumed")


def test_a_leg_can_start_from_another_legs_weights_in_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BONEAGE_CAMPAIGN_DIR", str(tmp_path / "runs"))
    leg = _leg("campaign:first/best.pt")
    try:
        campaign.train_command("second", leg)
        raise AssertionError("a missing leg's weights must stop the start")
    except SystemExit as e:
        assert "does not have" in str(e) and str(tmp_path / "runs" / "first" / "best.pt") in str(e)
    (tmp_path / "runs" / "first").mkdir(parents=True)
    (tmp_path / "runs" / "first" / "best.pt").write_bytes(b"")
    assert _init_from(campaign.train_command("second", leg)) == str(tmp_path / "runs" / "first" / "best.pt")
