"""Training-time augmentation, applied on top of edge.preprocess output (never a second preprocessing).

Batched random affine (rotation, scale, shift), horizontal flip (RSNA holds left and right hands) and
contrast/brightness jitter, all on the already-normalised tensors.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(x: torch.Tensor, max_rot_deg: float = 15.0, scale=(0.9, 1.1), max_shift: float = 0.06,
                  flip_p: float = 0.5, contrast=(0.8, 1.2), brightness: float = 0.2, p: float = 1.0) -> torch.Tensor:
    """p: the share of images augmented; the rest pass unchanged (the identity warp samples pixel centres)."""
    n = x.shape[0]
    on = (torch.rand(n) < p).float()
    angle = (torch.rand(n) * 2 - 1) * math.radians(max_rot_deg) * on
    s = 1 + (torch.empty(n).uniform_(*scale) - 1) * on
    flip = torch.where(torch.rand(n) < flip_p * on, -1.0, 1.0)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = (torch.rand(n, 2) * 2 - 1) * max_shift * 2 * on[:, None]
    x = warp(x, theta)
    on = on.view(n, 1, 1, 1)
    c = 1 + (torch.empty(n, 1, 1, 1).uniform_(*contrast) - 1) * on
    b = (torch.rand(n, 1, 1, 1) * 2 - 1) * brightness * on
    return x * c.to(x.device) + b.to(x.device)  # the random draws stay on the CPU stream, on any device


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images through (N, 2, 3) affine maps: bilinear, border pixels repeated."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
