"""Recovery after compression: batch-norm adaptation, and the one fine-tune loop (after pruning, and for
quantization-aware training).

It runs models.train's own epoch step (same loss: smooth L1 on standardised age + weighted BCE on sex,
same augmentation, gradient clipping and cosine schedule), so a compressed model is trained exactly as
its parent was, only shorter and at a lower learning rate.
"""
from __future__ import annotations

from types import SimpleNamespace

import nncf
import numpy as np
import torch

from models.train import _train_epoch, lr_at
from quantize.ptq import calibration_dataset

FINETUNE_LR = 1e-4  # after pruning: a twentieth of training's peak rate (edge-train --lr 2e-3)
# BatchNorm keeps a running average with momentum 0.1, so adaptation needs a few dozen batches to forget
# the old statistics (0.9^37 = 2% left after 300 images in batches of 8).
BN_BATCH = 8


def adapt_batchnorm(model: torch.nn.Module, x: np.ndarray) -> torch.nn.Module:
    """Re-estimate BatchNorm statistics on `x` (nncf.batch_norm_adaptation), in place.

    Pruning shifts the mean and variance of every activation downstream of a removed weight or filter;
    the running statistics from training no longer match them.
    """
    return nncf.batch_norm_adaptation(model, calibration_dataset(x, BN_BATCH)).eval()


def finetune(model: torch.nn.Module, x: np.ndarray, age_months: np.ndarray, male: np.ndarray, epochs: int,
             lr: float = FINETUNE_LR, batch_size: int = 32, sex_weight: float = 0.5, augment: bool = True,
             seed: int = 0, desc: str = "fine-tune", progress: bool = True, augment_p: float = 0.5) -> torch.nn.Module:
    """Train `model` (plain, pruned, or NNCF-wrapped) in place for `epochs` on (N, C, H, W) images.

    augment_p 0.5 (half the images unwarped) is the default model's own recipe since v4: warping every
    image left the network unused to the raw pixels that inference gives it (docs/EXPERIMENTS.md)."""
    if epochs <= 0:
        return model.eval()
    cfg = model.cfg
    y_age = torch.from_numpy(((age_months - cfg.age_mean) / cfg.age_std).astype(np.float32))
    y_sex = torch.from_numpy(np.asarray(male, dtype=np.float32))
    batch_size = min(batch_size, len(x))
    steps = len(x) // batch_size
    # No weight decay: a short fine-tune should move the weights (and NNCF's quantizer scales) only
    # as far as the loss asks, not shrink them toward zero.
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, steps * epochs, 0))
    step_args = SimpleNamespace(batch_size=batch_size, sex_weight=sex_weight, no_augment=not augment,
                                augment_p=augment_p)
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(x), generator=gen)[: steps * batch_size]
        _train_epoch(model, opt, sched, x, y_age, y_sex, order, step_args, torch.device("cpu"), None,
                     desc=f"{desc} {epoch + 1}/{epochs}", progress=progress)
    return model.eval()
