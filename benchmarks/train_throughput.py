"""Training images per second for a model variant on this CPU (random data; forward + backward + AdamW).

    python benchmarks/train_throughput.py --threads 2 --net-size 0 128 144
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from models.inception import MODEL_CONFIGS, BoneAgeNet


def images_per_second(cfg, batch: int, steps: int, warmup: int = 2) -> float:
    model = BoneAgeNet(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(batch, cfg.input.channels, cfg.input.height, cfg.input.width)
    x = x.contiguous(memory_format=torch.channels_last)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        outputs = model(x)  # age, sex logit, and the per-sex age heads where the model has them
        sum(out.float().square().mean() for out in outputs).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return batch * steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="w050-100", choices=list(MODEL_CONFIGS))
    p.add_argument("--net-size", type=int, nargs="+", default=[0, 128])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for size in args.net_size:
        rate = images_per_second(replace(MODEL_CONFIGS[args.model], net_size=size), args.batch, args.steps)
        print(f"{args.model} net_size {size or 'off'}: {rate:.0f} img/s ({args.threads} threads, batch {args.batch})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
