"""Structured (filter) pruning with torch-pruning: whole output channels leave the Inception blocks.

torch-pruning traces the network into a dependency graph, so removing a filter also removes the
BatchNorm channel after it and the matching input channels of every consumer: the other branches'
concatenations keep their offsets, the SE gate (whose output multiplies the trunk's output channel by
channel) loses exactly the trunk's removed channels, and the heads lose the matching inputs. The heads'
outputs (one each; two for the per-sex age head) are never pruned. The result is still a BoneAgeNet, only narrower: its state_dict
describes it, and models.checkpoint.load_model / resize_to_state_dict rebuild it.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from models.inception import BoneAgeNet
from quantize.finetune import adapt_batchnorm


def prune_structured(model: BoneAgeNet, ratio: float, x: np.ndarray, global_ranking: bool = False) -> BoneAgeNet:
    """A copy of `model` with `ratio` of each prunable layer's filters removed (smallest L2 norm first,
    ranked per layer, or across layers with `global_ranking`), BatchNorm statistics re-estimated on `x`."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"pruning ratio must be in (0, 1); got {ratio}")
    pruned = copy.deepcopy(model).eval()
    example = torch.from_numpy(x[:1])
    pruner = tp.pruner.MetaPruner(
        pruned, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
        # No round_to=8: at width 0.35 layers have 8-24 channels, and rounding down to multiples of 8
        # turned ratio 0.3 into 50% on some layers and made ratio 0.95 skip most layers altogether.
        global_pruning=global_ranking,
        ignored_layers=pruned.heads(),
        # forward() returns (age, sex[, age by sex]): the graph is traced from every output, so the per-sex
        # head loses the same input channels as the others.
        output_transform=lambda out: sum(o.sum() for o in out))
    pruner.step()
    pruned.num_features = pruned.age_head.in_features
    check_consistent(pruned)
    return adapt_batchnorm(pruned, x)


def check_consistent(model: BoneAgeNet) -> None:
    """The trunk's output width must equal every SE gate's width and every head's input."""
    trunk = model.features.Mixed_7c
    width = sum(m.bn.num_features for name, m in trunk.named_children()
                if name in ("branch1x1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_3a",
                            "branch3x3dbl_3b", "branch_pool"))
    widths = {"trunk": width} | {f"head{k}": h.in_features for k, h in enumerate(model.heads())}
    for k, se in enumerate(model.se):
        widths[f"se{k}.fc1 in"], widths[f"se{k}.fc2 out"] = se.fc1.in_channels, se.fc2.out_channels
    if len(set(widths.values())) != 1:
        raise RuntimeError(f"structured pruning left inconsistent widths: {widths}")


def channel_summary(model: nn.Module) -> dict:
    """Parameter count and the trunk's output width, for logs and compressed.pt's info."""
    return {"params": sum(p.numel() for p in model.parameters()),
            "features": int(model.age_head.in_features)}
