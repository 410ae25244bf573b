"""The checkpoint format: one definition. A checkpoint always carries its ModelConfig.

`best.pt` holds half-precision weights + config + metrics (compact, committable); `last.pt` holds the
full training state for resuming (fp32 weights, optimizer, schedule, RNG, history).

Settings that change no weight (the in-network resize, the mirrored-image averaging) can be changed on a
trained checkpoint; the result is a new checkpoint with the same weights:

    python -m models.checkpoint IN.pt OUT.pt --flip-tta on --net-size 144 --tta-zooms 0.95,1.05
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from edge.config import ModelConfig
from models.inception import BoneAgeNet, create_model


def save_weights(path, model: BoneAgeNet, extra: dict | None = None) -> None:
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in _unwrap(model).state_dict().items()}
    _atomic_save({"config": model_config(model).to_dict(), "model": state, **(extra or {})}, path)


def save_compact(path, model: BoneAgeNet, extra: dict | None = None) -> None:
    """save_weights at about half the size, for a starting point kept in the repository: every weight of two or
    more dimensions as int8 with one fp16 scale per output channel (symmetric), the rest fp16. Lossy (as INT8
    inference is); load_model reads it like any checkpoint."""
    state = {}
    for k, v in _unwrap(model).state_dict().items():
        if v.is_floating_point() and v.dim() >= 2:
            scale = v.abs().flatten(1).amax(1).clamp_min(1e-12) / 127
            q = torch.round(v / scale.view(-1, *[1] * (v.dim() - 1))).to(torch.int8)
            state[k] = {"int8": q, "scale": scale.half()}
        else:
            state[k] = v.half() if v.is_floating_point() else v
    _atomic_save({"config": model_config(model).to_dict(), "model": state, "compact": "int8-per-channel",
                  **(extra or {})}, path)


def _expanded(state: dict) -> dict:
    """A compact checkpoint's weights back to float tensors (other checkpoints' pass through)."""
    out = {}
    for k, v in state.items():
        if isinstance(v, dict):
            v = v["int8"].float() * v["scale"].float().view(-1, *[1] * (v["int8"].dim() - 1))
        out[k] = v
    return out


def load_model(path, map_location="cpu") -> tuple[BoneAgeNet, dict]:
    """Checkpoint (best.pt or last.pt) -> (fp32 model in eval mode, the checkpoint dict). The model is a
    BoneAgeNet, or a MeanOfNetworks for a checkpoint made by models.ensemble: both have .cfg and the same outputs."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if "config" not in ckpt or "model" not in ckpt:
        raise ValueError(f"{path}: not a bone-age checkpoint (no config/model entries)")
    model = create_model(ModelConfig.from_dict(ckpt["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in _expanded(ckpt["model"]).items()}
    resize_to_state_dict(model, state)
    model.load_state_dict(state)
    return model.eval(), ckpt


# ModelConfig fields that no parameter's shape depends on.
WEIGHTLESS_FIELDS = ("net_size", "flip_tta", "tta_zooms", "input")


def with_config(model: BoneAgeNet, **changes) -> BoneAgeNet:
    """The same weights under a config that differs only in WEIGHTLESS_FIELDS."""
    unknown = set(changes) - set(WEIGHTLESS_FIELDS)
    if unknown:
        raise ValueError(f"{', '.join(sorted(unknown))}: changing these needs new weights")
    cfg = replace(model.cfg, **changes)
    if cfg == model.cfg:
        return model
    new = create_model(cfg)
    new.load_state_dict(model.state_dict())
    return new.train(model.training)


def resize_to_state_dict(model: torch.nn.Module, state: dict) -> None:
    """Give each Conv2d/BatchNorm2d/Linear the shape its weights have in `state`.

    Structured pruning removes channels layer by layer; the pruned network is still a BoneAgeNet
    (same modules, same forward), only narrower, so its state_dict alone describes it.
    """
    for name, module in list(model.named_modules()):
        key = f"{name}.weight" if name else "weight"
        if key not in state or not isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            continue
        shape = tuple(state[key].shape)
        if shape == tuple(module.weight.shape):
            continue
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(shape[1] * module.groups, shape[0], module.kernel_size, module.stride,
                            module.padding, module.dilation, module.groups, bias=module.bias is not None)
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(shape[0], eps=module.eps, momentum=module.momentum)
        else:
            new = nn.Linear(shape[1], shape[0], bias=module.bias is not None)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.checkpoint",
                                description="Copy a checkpoint with changed weightless settings.")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--net-size", type=int, help="in-network resize (0: off)")
    p.add_argument("--flip-tta", choices=["on", "off"], help="average the prediction with the mirrored image's")
    p.add_argument("--tta-zooms", metavar="Z1,Z2", help="zooms averaged with the plain image ('' : none)")
    p.add_argument("--compact", action="store_true", help="write int8 weights with per-channel scales (half the "
                                                          "size; lossy): a starting point to keep in the repository")
    args = p.parse_args(argv)
    changes = {} if args.net_size is None else {"net_size": args.net_size}
    if args.flip_tta:
        changes["flip_tta"] = args.flip_tta == "on"
    if args.tta_zooms is not None:
        changes["tta_zooms"] = tuple(float(z) for z in args.tta_zooms.split(",") if z.strip())
    model, ckpt = load_model(args.src)
    model = with_config(model, **changes)
    extra = {k: v for k, v in ckpt.items() if k not in ("config", "model")}
    extra = {k: v for k, v in extra.items() if k != "compact"}
    save = save_compact if args.compact else save_weights
    save(args.dst, model, extra | {"derived_from": {"checkpoint": str(args.src), "changes": changes}})
    print(f"{args.dst}: {changes or 'no changes'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
