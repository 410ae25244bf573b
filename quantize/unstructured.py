"""Unstructured magnitude pruning with NNCF (nncf.prune), then batch-norm adaptation.

Zeroed weights shrink compressed files, not latency: the runtimes still multiply the zeros
(TOOLCHAIN.md measured 50% sparsity at unchanged OpenVINO latency). Channel removal (structured.py)
is what makes a model faster.
"""
from __future__ import annotations

import copy

import nncf
import numpy as np
import torch
from nncf.parameters import StripFormat
from torch import nn

from models.checkpoint import resize_to_state_dict
from models.inception import BoneAgeNet, create_model
from quantize.compressed import HOOKS_PREFIX
from quantize.finetune import adapt_batchnorm

MODES = {"local": nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_LOCAL, "global": nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL}
# The heads are one output each (2 x num_features weights): pruning them costs accuracy and saves nothing.
HEADS = nncf.IgnoredScope(patterns=[r"(age|sex)_head\b"])


def prune_unstructured(model: BoneAgeNet, ratio: float, x: np.ndarray, mode: str = "local") -> nn.Module:
    """A copy of `model` with NNCF pruning masks zeroing `ratio` of each conv's weights (mode "local") or
    of all conv weights ranked together (mode "global"), its BatchNorm statistics re-estimated on `x`.

    The masks stay as NNCF hooks so that a fine-tune keeps pruned weights at zero; `bake` removes them.
    """
    if mode not in MODES:
        raise ValueError(f"unstructured pruning mode must be one of {', '.join(MODES)}; got {mode!r}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"pruning ratio must be in (0, 1); got {ratio}")
    example = torch.from_numpy(x[:1])
    pruned = nncf.prune(copy.deepcopy(model).eval(), MODES[mode], ratio=ratio, ignored_scope=HEADS,
                        examples_inputs=example)
    return adapt_batchnorm(pruned, x)


def bake(pruned: nn.Module) -> BoneAgeNet:
    """Masked NNCF model -> a plain BoneAgeNet whose pruned weights are zeros (masks applied, hooks gone)."""
    stripped = nncf.strip(pruned, do_copy=True, strip_format=StripFormat.IN_PLACE)
    state = {k: v for k, v in stripped.state_dict().items() if not k.startswith(HOOKS_PREFIX)}
    plain = create_model(stripped.cfg)
    resize_to_state_dict(plain, state)  # the model may have been structurally pruned before
    plain.load_state_dict(state)
    return plain.eval()


def sparsity(model: nn.Module) -> float:
    """Fraction of conv and linear weights that are exactly zero."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)
