"""Widen a trained BoneAgeNet without changing what it computes (Net2WiderNet, Chen et al., arXiv:1511.05641).

    python -m models.widen models/checkpoints/default.pt /tmp/w075.pt --width 0.75
    edge-train --init-from /tmp/w075.pt ...      # the wider network starts where the narrow one stands

Every new channel of a layer copies one of the old channels (the old ones first, then random picks); the layer
that reads a copied channel divides that channel's weights among the copies, so every sum is the old one and the
network's outputs are unchanged. The division is a random split that sums to one rather than an even one, so the
copies get different gradients and grow apart in training instead of staying twins.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace

import torch
from torch import nn

from models.checkpoint import load_model, save_weights
from models.inception import (BasicConv2d, BoneAgeNet, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE)


@dataclass
class Channels:
    """A widened tensor's channels: idx[j] is the old channel that new channel j copies; share[j] is the part of
    that old channel's outgoing weight new channel j carries (the shares of one old channel's copies sum to 1)."""
    idx: torch.Tensor
    share: torch.Tensor
    n_old: int

    @staticmethod
    def identity(n: int) -> "Channels":
        return Channels(torch.arange(n), torch.ones(n), n)

    @staticmethod
    def grown(n_old: int, n_new: int, gen: torch.Generator) -> "Channels":
        if n_new < n_old:
            raise ValueError(f"cannot widen {n_old} channels to {n_new}")
        idx = torch.cat([torch.arange(n_old), torch.randint(n_old, (n_new - n_old,), generator=gen)])
        raw = torch.empty(n_new).uniform_(0.5, 1.5, generator=gen)
        total = torch.zeros(n_old).index_add_(0, idx, raw)
        return Channels(idx, raw / total[idx], n_old)

    @staticmethod
    def cat(parts: list["Channels"]) -> "Channels":
        offsets = torch.tensor([0] + [p.n_old for p in parts[:-1]]).cumsum(0)
        return Channels(torch.cat([p.idx + o for p, o in zip(parts, offsets)]),
                        torch.cat([p.share for p in parts]), sum(p.n_old for p in parts))


def widen(old: BoneAgeNet, width: float, seed: int = 0) -> BoneAgeNet:
    """A BoneAgeNet of `width` (>= old's) whose outputs equal old's, in eval and in training mode."""
    if old.cfg.member_net_sizes or not isinstance(old, BoneAgeNet):
        raise ValueError("widen one network, not a mean of networks")
    new = BoneAgeNet(replace(old.cfg, width=width))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ch = Channels.identity(old.cfg.input.channels)
        for name, old_m in old.features.named_children():
            new_m = getattr(new.features, name)
            if isinstance(old_m, BasicConv2d):
                ch = _conv(old_m, new_m, ch, gen)
            elif type(old_m) in _BLOCKS:
                ch = _BLOCKS[type(old_m)](old_m, new_m, ch, gen)
            # a max-pool between the stem's layers keeps the channels as they are
        for old_se, new_se in zip(old.se, new.se):
            _squeeze_excite(old_se, new_se, ch, gen)
        for old_h, new_h in zip(old.heads(), new.heads()):
            new_h.weight.copy_(old_h.weight[:, ch.idx] * ch.share)
            new_h.bias.copy_(old_h.bias)
    return new.train(old.training)


def _conv(old: BasicConv2d, new: BasicConv2d, ch_in: Channels, gen) -> Channels:
    out = Channels.grown(old.conv.out_channels, new.conv.out_channels, gen)
    new.conv.weight.copy_(old.conv.weight[out.idx][:, ch_in.idx] * ch_in.share[None, :, None, None])
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new.bn, name).copy_(getattr(old.bn, name)[out.idx])
    new.bn.num_batches_tracked.copy_(old.bn.num_batches_tracked)
    return out


def _chain(old_block, new_block, names: list[str], ch: Channels, gen) -> Channels:
    for name in names:
        ch = _conv(getattr(old_block, name), getattr(new_block, name), ch, gen)
    return ch


def _inception_a(old: InceptionA, new: InceptionA, ch: Channels, gen) -> Channels:
    return Channels.cat([_chain(old, new, ["branch1x1"], ch, gen),
                         _chain(old, new, ["branch5x5_1", "branch5x5_2"], ch, gen),
                         _chain(old, new, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], ch, gen),
                         _chain(old, new, ["branch_pool"], ch, gen)])


def _inception_b(old: InceptionB, new: InceptionB, ch: Channels, gen) -> Channels:
    return Channels.cat([_chain(old, new, ["branch3x3"], ch, gen),
                         _chain(old, new, ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], ch, gen),
                         ch])  # the max-pool branch passes the input's channels through


def _inception_c(old: InceptionC, new: InceptionC, ch: Channels, gen) -> Channels:
    dbl = [f"branch7x7dbl_{k}" for k in range(1, 6)]
    return Channels.cat([_chain(old, new, ["branch1x1"], ch, gen),
                         _chain(old, new, ["branch7x7_1", "branch7x7_2", "branch7x7_3"], ch, gen),
                         _chain(old, new, dbl, ch, gen),
                         _chain(old, new, ["branch_pool"], ch, gen)])


def _inception_d(old: InceptionD, new: InceptionD, ch: Channels, gen) -> Channels:
    b7 = [f"branch7x7x3_{k}" for k in range(1, 5)]
    return Channels.cat([_chain(old, new, ["branch3x3_1", "branch3x3_2"], ch, gen),
                         _chain(old, new, b7, ch, gen), ch])


def _inception_e(old: InceptionE, new: InceptionE, ch: Channels, gen) -> Channels:
    b3 = _chain(old, new, ["branch3x3_1"], ch, gen)
    bd = _chain(old, new, ["branch3x3dbl_1", "branch3x3dbl_2"], ch, gen)
    return Channels.cat([_chain(old, new, ["branch1x1"], ch, gen),
                         _chain(old, new, ["branch3x3_2a"], b3, gen), _chain(old, new, ["branch3x3_2b"], b3, gen),
                         _chain(old, new, ["branch3x3dbl_3a"], bd, gen), _chain(old, new, ["branch3x3dbl_3b"], bd, gen),
                         _chain(old, new, ["branch_pool"], ch, gen)])


_BLOCKS = {InceptionA: _inception_a, InceptionB: _inception_b, InceptionC: _inception_c,
           InceptionD: _inception_d, InceptionE: _inception_e}


def _squeeze_excite(old, new, ch: Channels, gen) -> None:
    """fc1 reads the features (split), its hidden units grow; fc2 reads the hidden units (split) and writes one
    gate per feature channel, copied with the channel, so each copy is gated as its original."""
    hidden = Channels.grown(old.fc1.out_channels, new.fc1.out_channels, gen)
    new.fc1.weight.copy_(old.fc1.weight[hidden.idx][:, ch.idx] * ch.share[None, :, None, None])
    new.fc1.bias.copy_(old.fc1.bias[hidden.idx])
    new.fc2.weight.copy_(old.fc2.weight[ch.idx][:, hidden.idx] * hidden.share[None, :, None, None])
    new.fc2.bias.copy_(old.fc2.bias[ch.idx])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.widen", description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--width", type=float, required=True, help="the new channel width (e.g. 0.75, 1.0)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    old, ckpt = load_model(args.src)
    new = widen(old, args.width, args.seed)
    extra = {k: v for k, v in ckpt.items() if k not in ("config", "model")}
    save_weights(args.dst, new, extra | {"derived_from": {"checkpoint": str(args.src),
                                                          "changes": {"width": args.width, "widen_seed": args.seed}}})
    n_old, n_new = (sum(p.numel() for p in m.parameters()) for m in (old, new))
    print(f"{args.dst}: width {old.cfg.width} -> {args.width}, {n_old / 1e6:.2f} -> {n_new / 1e6:.2f} M params")
    return 0


if __name__ == "__main__":
    sys.exit(main())
