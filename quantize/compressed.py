"""The compressed-checkpoint format (OUT/compressed.pt): the one handoff from edge-quantize to edge-export.

A torch file holding a dict:
    format  "boneage-compressed/1"
    config  ModelConfig.to_dict() of the base network (preprocessing and de-standardisation travel along)
    model   the full fp32 state_dict: base weights (possibly narrower after structured pruning, zeros after
            unstructured pruning, on their INT8 grid after quantization: quantize.ptq.snap_weights) plus
            NNCF's quantizer parameters (scales, signedness) under "__nncf_hooks."
    nncf    nncf.torch.get_config(model) for NNCF-quantized models, else None
    info    what edge-quantize did: methods, calibration set, retention verdict, parent checkpoint

Unlike best.pt, weights stay fp32: half-precision rounding would move INT8 scales and the weights they
were calibrated for, and the retention verdict holds for exactly these numbers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from edge.config import ModelConfig
from models.checkpoint import _atomic_save, resize_to_state_dict
from models.inception import create_model

FORMAT = "boneage-compressed/1"
DEFAULT_NAME = "compressed.pt"
REJECTED_NAME = "rejected.pt"  # a model that failed the gate, written only on request (edge-quantize --keep-rejected)
# Where NNCF's function-hook wrapper keeps its modules (nncf.torch.function_hook.wrapper.ATR_HOOK_STORAGE).
HOOKS_PREFIX = "__nncf_hooks."


def save_compressed(path, model: torch.nn.Module, base_cfg: ModelConfig, info: dict) -> Path:
    """Write `model` (a BoneAgeNet, pruned or not, NNCF-quantized or not) with its config and `info`."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    _atomic_save({"format": FORMAT, "config": base_cfg.to_dict(), "model": state,
                  "nncf": _nncf_config(model), "info": dict(info)}, path)
    return Path(path)


def load_compressed(path, map_location="cpu") -> tuple[torch.nn.Module, ModelConfig, dict]:
    """compressed.pt -> (model in eval mode, its ModelConfig, info).

    The model's forward() returns (standardised age, sex logit) like BoneAgeNet's, and
    export.onnx_export.export_onnx(model, cfg, path) writes QuantizeLinear/DequantizeLinear pairs for it.
    """
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a compressed checkpoint ({FORMAT}); write one with edge-quantize, "
                         "or load a training checkpoint (best.pt) with models.checkpoint.load_model")
    cfg = ModelConfig.from_dict(ckpt["config"])
    state = ckpt["model"]
    model = create_model(cfg)
    # Narrower layers after structured pruning: the state_dict's shapes describe the network.
    resize_to_state_dict(model, state)
    if ckpt["nncf"]:
        import nncf.torch

        from quantize.ptq import use_qdq_export

        # As in NNCF's QAT example: re-insert the quantizers from the config, then load their scales.
        model = use_qdq_export(nncf.torch.load_from_config(model, ckpt["nncf"]))
    model.load_state_dict(state)
    return model.eval(), cfg, ckpt["info"]


def _nncf_config(model: torch.nn.Module) -> dict | None:
    if not any(k.startswith(HOOKS_PREFIX) for k in model.state_dict()):
        return None
    import nncf.torch

    config = nncf.torch.get_config(model)
    return config if any(config.values()) else None
