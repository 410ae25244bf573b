"""Combine trained checkpoints into one checkpoint whose model predicts their mean (ModelConfig.member_net_sizes).

    python -m models.ensemble OUT.pt runs/w050-160-kd/best.pt runs/w050-192/best.pt
    python -m models.ensemble MEMBER.pt --extract 1 models/checkpoints/default.pt   # one member back, to train it

The members must be the same network trained on the same split (they may differ only in net_size), so the
result is one model for edge-quantize, edge-export and every backend: one graph, the mean inside it.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from edge.config import ModelConfig
from models.checkpoint import load_model, save_weights
from models.inception import BoneAgeNet, MeanOfNetworks


def member_configs_agree(paths: list, cfgs: list[ModelConfig]) -> ModelConfig:
    """The shared config (net_size 0) of the members; ValueError naming the checkpoint that does not fit."""
    base = replace(cfgs[0], net_size=0)
    for path, cfg in zip(paths, cfgs):
        if cfg.member_net_sizes:
            raise ValueError(f"{path}: already a mean of networks; list its member checkpoints instead")
        if not cfg.net_size:
            raise ValueError(f"{path}: net_size 0; a member needs its own in-network size "
                             "(python -m models.checkpoint IN OUT --net-size N)")
        if replace(cfg, net_size=0) != base:
            raise ValueError(f"{path}: its network or input differs from {paths[0]}'s in more than net_size")
    return base


def combine(paths: list) -> tuple[MeanOfNetworks, dict]:
    """Member checkpoints -> (the mean model in eval mode, what its checkpoint records beside the weights)."""
    if len(paths) < 2:
        raise ValueError("a mean of networks needs two or more checkpoints")
    loaded = [load_model(p) for p in paths]
    base = member_configs_agree(paths, [net.cfg for net, _ in loaded])
    splits = {ckpt.get("split") for _, ckpt in loaded}
    if len(splits) != 1:
        # Members trained on different splits would each have seen the other's validation or test images.
        raise ValueError(f"the checkpoints were trained on different splits ({', '.join(map(str, splits))})")
    model = MeanOfNetworks(replace(base, member_net_sizes=tuple(net.cfg.net_size for net, _ in loaded)))
    for member, (net, _) in zip(model.members, loaded):
        member.load_state_dict(net.state_dict())
    first = loaded[0][1]
    extra = {"split": first.get("split"), "data": first.get("data"),
             "members": [{"checkpoint": str(p), "net_size": net.cfg.net_size, "epoch": ckpt.get("epoch"),
                          "val_metrics": ckpt.get("val_metrics")} for p, (net, ckpt) in zip(paths, loaded)]}
    return model.eval(), extra


def extract(path, index: int) -> tuple[BoneAgeNet, dict]:
    """Member `index` of a combined checkpoint -> (that network in eval mode, what its own checkpoint recorded), so a
    member can be trained again when its original run folder is gone."""
    model, ckpt = load_model(path)
    if not model.cfg.member_net_sizes:
        raise ValueError(f"{path}: one network, not a mean of networks")
    if not 0 <= index < len(model.members):
        raise ValueError(f"{path}: member {index} does not exist (it has {len(model.members)}: 0-{len(model.members) - 1})")
    record = (ckpt.get("members") or [{}] * len(model.members))[index]
    extra = {"split": ckpt.get("split"), "data": ckpt.get("data"), "epoch": record.get("epoch"),
             "val_metrics": record.get("val_metrics"), "derived_from": {"checkpoint": str(path), "member": index}}
    return model.members[index].eval(), extra


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.ensemble", description=__doc__.splitlines()[0])
    p.add_argument("out", help="checkpoint to write (half-precision weights, like best.pt)")
    p.add_argument("members", nargs="+", help="trained checkpoints (best.pt) of the same network and split; with "
                                              "--extract, the one combined checkpoint to take a member from")
    p.add_argument("--extract", type=int, metavar="K", help="write member K (0-based) of a combined checkpoint instead")
    args = p.parse_args(argv)
    try:
        if args.extract is not None:
            if len(args.members) != 1:
                raise ValueError("--extract takes one combined checkpoint")
            net, extra = extract(args.members[0], args.extract)
            save_weights(args.out, net, extra)
            print(f"{args.out}: member {args.extract} of {args.members[0]} (net_size {net.cfg.net_size})")
            return 0
        model, extra = combine(args.members)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    save_weights(args.out, model, extra)
    print(f"{args.out}: mean of {len(args.members)} networks at {', '.join(map(str, model.cfg.member_net_sizes))} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
