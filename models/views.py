"""The network's first op: the input resized to the network's size, once per prediction-time view.

A view is a zoom about the centre (the training augmentation's own bilinear warp, models.augment.warp),
optionally mirrored, followed by the bilinear resize to `net_size`. Each step is linear and acts on rows
and columns separately, so a view is two constant matrices and its image is `rows @ x @ cols`: two MatMuls
that every backend runs (ONNX, OpenVINO, TensorRT) instead of a GridSample. The matrices are measured by
sending unit impulses through the very torch ops, so a view equals warp -> flip -> interpolate exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.augment import warp


def axis_matrix(n_in: int, n_out: int, zoom: float = 1.0, mirror: bool = False) -> torch.Tensor:
    """(n_out, n_in): one axis of zoom -> mirror -> bilinear resize, as a matrix."""
    # Impulse k is input row k set to 1 (2 px wide, constant across): the output's first column is the
    # response, so column k of the matrix. Border padding keeps every row's weights summing to 1.
    impulses = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, n_in, 1).expand(n_in, 1, n_in, 2)
    x = impulses.contiguous()
    if zoom != 1.0:
        theta = torch.tensor([[1 / zoom, 0, 0], [0, 1 / zoom, 0]], dtype=torch.float64).expand(n_in, 2, 3)
        x = warp(x, theta)
    if mirror:
        x = x.flip(2)
    if n_out != n_in:
        x = F.interpolate(x, size=(n_out, 2), mode="bilinear", align_corners=False)
    return x[:, 0, :, 0].T.float()


class ViewResize(nn.Module):
    """(N, C, H, W) -> (V*N, C, out, out) in eval mode (view-major), or view 0 alone (N, ...) in training.

    View 0 is the plain resize (zoom 1, not mirrored): what training sees. Views: zoom 1 then `zooms`, each
    followed by its mirror when `mirror`.
    """

    def __init__(self, in_hw: tuple[int, int], out_size: int, zooms: tuple[float, ...] = (), mirror: bool = False):
        super().__init__()
        (in_h, in_w), out = in_hw, out_size or None
        self.views = [(z, m) for z in (1.0, *zooms) for m in ((False, True) if mirror else (False,))]
        self.resizes = bool(out_size) and (in_h, in_w) != (out, out)
        out_h, out_w = (out, out) if out else (in_h, in_w)
        rows = torch.stack([axis_matrix(in_h, out_h, z) for z, _ in self.views])
        cols = torch.stack([axis_matrix(in_w, out_w, z, m).T for z, m in self.views])
        # Not in the state_dict: they follow from the config, so checkpoints stay what they were.
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    @property
    def n_views(self) -> int:
        return len(self.views)

    def forward(self, x: torch.Tensor, all_views: bool = False) -> torch.Tensor:
        if not all_views or self.n_views == 1:
            return self.rows[0] @ x @ self.cols[0] if self.resizes else x
        c = x.shape[1]
        y = self.rows[:, None, None] @ x[None] @ self.cols[:, None, None]  # (V, N, C, out_h, out_w)
        return y.reshape(-1, c, y.shape[-2], y.shape[-1])
