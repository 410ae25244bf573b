"""The checkpoint format: one definition. A checkpoint always carries its ModelConfig.

`best.pt` holds half-precision weights + config + metrics (compact, committable); `last.pt` holds the
full training state for resuming (fp32 weights, optimizer, schedule, RNG, history).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from edge.config import ModelConfig
from models.inception import BoneAgeNet


def save_weights(path, model: BoneAgeNet, extra: dict | None = None) -> None:
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in _unwrap(model).state_dict().items()}
    _atomic_save({"config": model_config(model).to_dict(), "model": state, **(extra or {})}, path)


def load_model(path, map_location="cpu") -> tuple[BoneAgeNet, dict]:
    """Checkpoint (best.pt or last.pt) -> (fp32 model in eval mode, the checkpoint dict)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a bone-age checkpoint (no config/model entries)")
    model = BoneAgeNet(ModelConfig.from_dict(ckpt["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    return model.eval(), ckpt


def save_training_state(path, **state) -> None:
    _atomic_save(state, path)


def model_config(model) -> ModelConfig:
    return _unwrap(model).cfg


def _unwrap(model):
    return getattr(model, "module", model)


def _atomic_save(obj, path) -> None:
    # Write then rename, so an interrupted save never leaves a corrupt checkpoint behind.
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
