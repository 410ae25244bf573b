"""Train the paper-size network (width 1.0, 299 px) on one GPU inside a wall-clock budget.

    python -m models.gpu_train --data ../shared/data/rsna-boneage/train-299 --out $OUT --minutes 8
    python -m models.gpu_train --data PHANTOMS --out /tmp/dry --device cpu --width 0.1 --image-size 80 \
        --max-steps 3 --split-file ''                                           # the CPU dry run (tests)

Made for a lent GPU machine with 10 minutes a command: the images are decoded and resized once into memory as
uint8 (12,411 at 299 px: 1.1 GB, on the GPU), normalised and augmented there per batch (the training run's
augmentation, models.augment), bf16 autocast, channels_last. The cosine schedule is fitted to the budget after
the first epoch, so the run ends annealed, not cut off. Everything else is models.train's: the loss, the EMA,
validation and the checkpoint format. OUT gets best.pt (fp16 weights; split into parts of at most 15 MiB, which
is what a lent machine hands back per file: join with `cat best.pt.part* > best.pt`), gpu-train.log and
history.json; each epoch prints its time, images/s and peak GPU memory.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edge import metrics
from edge.config import ModelConfig
from edge.preprocess import decode, normalize, resize
from models.augment import augment_batch
from models.checkpoint import save_weights
from models.data import make_split, read_labels, read_split
from models.ema import WeightEMA
from models.inception import MODEL_CONFIGS, BoneAgeNet, count_params
from models.train import RunLog, lr_at, predict_outputs, training_loss

PART_BYTES = 15 * 2**20


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m models.gpu_train", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with labels.csv + images/ (train-299)")
    p.add_argument("--pack", metavar="DIR", help="instead of training: copy the split's training and validation "
                                                 "images into DIR/part-K/ folders of at most --part-mb each, for a "
                                                 "lent GPU machine's size limit on what travels (docs/TRAINING.md)")
    p.add_argument("--part-mb", type=float, default=50.0)
    p.add_argument("--split-file", default="models/splits/rsna-train-100px-seed0.json",
                   help="the project's split ('': make a seeded 7:2:1 split of --data)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="paper-299", choices=list(MODEL_CONFIGS))
    p.add_argument("--width", type=float, help="channel width (overrides the model's)")
    p.add_argument("--image-size", type=int, help="input size in px (overrides the model's)")
    p.add_argument("--resize", choices=["squash", "pad"], default="squash",
                   help="squash: what train-299 already is (resizing it again would change nothing)")
    p.add_argument("--epochs", type=int, default=200, help="the schedule's length if the budget allows it")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget, image loading included")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (dry runs)")
    p.add_argument("--limit", type=int, help="only the first N labelled images")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=2.0)
    p.add_argument("--sex-weight", type=float, default=0.5)
    p.add_argument("--augment-p", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=16, help="decoding threads")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.pack:
        return pack(Path(args.data), args.split_file, Path(args.pack), args.part_mb)
    t_start = time.monotonic()
    budget = args.minutes * 60
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out / "gpu-train.log")
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        log(f"device {torch.cuda.get_device_name(device)}, torch {torch.__version__}")

    labels = read_labels(Path(args.data))
    if args.limit:
        labels = labels.subset(labels.ids[: args.limit])
    split = read_split(args.split_file) if args.split_file else make_split(labels, seed=args.seed)
    train_l, val_l = labels.subset(split["train"]), labels.subset(split["val"])
    cfg = _config(args, train_l.age)
    x_train = _load_uint8(train_l.paths(), cfg, args.workers, device)
    x_val = _load_uint8(val_l.paths(), cfg, args.workers, device)
    log(f"[1/3] {len(x_train)} train / {len(x_val)} val images at {cfg.input.height} px in "
        f"{time.monotonic() - t_start:.0f} s ({x_train.numel() / 2**30:.2f} GiB uint8 on {device})")

    model = BoneAgeNet(cfg).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    ema = WeightEMA(model, args.ema)
    y_age = torch.from_numpy((train_l.age - cfg.age_mean) / cfg.age_std).float().to(device)
    y_sex = torch.from_numpy(train_l.male).float().to(device)
    steps_per_epoch = max(1, len(x_train) // args.batch_size)
    plan = {"total": steps_per_epoch * args.epochs, "warmup": int(steps_per_epoch * args.warmup_epochs)}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, plan["total"], plan["warmup"]))
    log(f"[2/3] {cfg.name} width {cfg.width}, {count_params(model) / 1e6:.2f} M params, batch {args.batch_size}, "
        f"{steps_per_epoch} steps an epoch, budget {args.minutes:g} min")

    history, best, step, epoch = [], math.inf, 0, 0
    while step < plan["total"] and (args.max_steps is None or step < args.max_steps):
        t0 = time.monotonic()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        loss, steps = _train_epoch(model, opt, sched, ema, x_train, y_age, y_sex, args, device, epoch,
                                   limit=None if args.max_steps is None else args.max_steps - step)
        step += steps
        epoch += 1
        seconds = time.monotonic() - t0
        row = _validate(ema.model, x_val, val_l, cfg, device) | {
            "epoch": epoch, "loss": loss, "lr": sched.get_last_lr()[0], "epoch_s": seconds,
            "images_per_s": steps * args.batch_size / seconds, "peak_gpu_gib": _peak_gib(device)}
        history.append(row)
        score = (row["val_mae"] + row.get("val_mae_sex_given", row["val_mae"])) / 2
        if score < best:
            best = score
            save_weights(out / "best.pt", ema.model, {"epoch": epoch, "val_metrics": row, "split": args.split_file,
                                                      "data": str(args.data), "trained_by": "models.gpu_train"})
        log(json.dumps(row) + ("  *best*" if score == best else ""))
        if epoch == 1:  # fit the schedule to the budget now that an epoch's cost is known
            left = budget - (time.monotonic() - t_start) - 60  # a minute for the last save and hand-back
            fit = max(epoch, min(args.epochs, epoch + int(left // seconds)))
            plan["total"] = steps_per_epoch * fit
            log(f"schedule: {fit} epochs fit the {args.minutes:g}-minute budget")
    (out / "history.json").write_text(json.dumps(history, indent=1))
    parts = _split_for_transfer(out / "best.pt")
    log(f"[3/3] {epoch} epochs, {step} steps in {(time.monotonic() - t_start) / 60:.1f} min; best validation MAE "
        f"(mean of sex-blind and sex-given) {best:.2f} months; weights {out / 'best.pt'}"
        + (f" in {len(parts)} parts" if parts else ""))
    return 0


def pack(data: Path, split_file: str, dst: Path, part_mb: float) -> int:
    """The training and validation images (never the test split's), as they are, into parts of <= part_mb MB:
    DIR/part-0/images/, ... each with the whole labels.csv; joined on the GPU machine with one `ln -s`."""
    import shutil

    labels = read_labels(data)
    split = read_split(split_file)
    paths = labels.subset(split["train"] + split["val"]).paths()
    part, size = 0, 0
    for path in paths:
        if size and size + path.stat().st_size > part_mb * 1e6:
            part, size = part + 1, 0
        images = dst / f"part-{part}" / "images"
        if size == 0:
            images.mkdir(parents=True, exist_ok=True)
            shutil.copy(data / "labels.csv", images.parent / "labels.csv")
        shutil.copy(path, images / path.name)
        size += path.stat().st_size
    print(f"{len(paths)} images in {part + 1} parts under {dst}")
    return 0


def _config(args, age: np.ndarray) -> ModelConfig:
    cfg = MODEL_CONFIGS[args.model]
    size = {"height": args.image_size, "width": args.image_size} if args.image_size else {}
    cfg = cfg.with_input(resize=args.resize, **size)
    width = {"width": args.width} if args.width else {}
    return replace(cfg, sex_heads=True, age_mean=float(age.mean()), age_std=float(age.std()), **width)


def _load_uint8(paths, cfg: ModelConfig, workers: int, device) -> torch.Tensor:
    """Decode and resize every image once (edge.preprocess's own steps): (N, 1, H, W) uint8 on `device`."""
    def one(path):
        img = resize(decode(path), cfg.input)
        if img.dtype != np.uint8:
            raise SystemExit(f"{path}: not an 8-bit image; this script keeps images as uint8")
        return img

    with ThreadPoolExecutor(workers) as pool:
        images = list(pool.map(one, paths))
    return torch.from_numpy(np.stack(images)[:, None]).to(device)


def gpu_normalize(x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """uint8 (N, 1, H, W) -> the network input edge.preprocess.normalize gives, computed on x's device
    (tests/test_training.py checks the two agree)."""
    x = x.float() / 255.0
    if cfg.input.normalize == "image":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-6)
        return (x - mean) / std
    return (x - cfg.input.mean) / cfg.input.std


def _train_epoch(model, opt, sched, ema, x, y_age, y_sex, args, device, epoch, limit=None):
    model.train()
    gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    order = torch.randperm(len(x), generator=gen).to(device)
    n = len(x) // args.batch_size if limit is None else min(limit, len(x) // args.batch_size)
    total = torch.zeros((), device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    for b in range(n):
        idx = order[b * args.batch_size:(b + 1) * args.batch_size]
        xb = augment_batch(gpu_normalize(x[idx], model.cfg), p=args.augment_p)
        xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            age_z, logit, *by_sex = model(xb)
        loss = training_loss(age_z.float(), logit.float(), [t.float() for t in by_sex], y_age[idx], y_sex[idx], args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        ema.update(model)
        total += loss.detach()  # no .item() per step: it would wait for the GPU every time
    return float(total) / max(1, n), n


@torch.no_grad()
def _validate(net, x_val: torch.Tensor, val_l, cfg: ModelConfig, device) -> dict:
    chunks = [predict_outputs(net, gpu_normalize(x_val[s:s + 256], cfg), device=device)
              for s in range(0, len(x_val), 256)]
    out = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    m = metrics.point_metrics(val_l.age, out["bone_age_months"], val_l.male, out["p_male"])
    row = {"val_mae": m["mae"], "val_accuracy": m["accuracy"], "val_auc": m["auc"]}
    given = out["bone_age_months_by_sex"][np.arange(len(val_l.male)), val_l.male.astype(int)]
    return row | {"val_mae_sex_given": float(np.abs(given - val_l.age).mean())}


def _peak_gib(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def _split_for_transfer(path: Path) -> list[Path]:
    """Cut a file over PART_BYTES into path.part0, .part1, ... (the original stays); [] when it is small enough."""
    if not path.exists() or path.stat().st_size <= PART_BYTES:
        return []
    data, parts = path.read_bytes(), []
    for k in range(0, len(data), PART_BYTES):
        parts.append(path.with_name(f"{path.name}.part{k // PART_BYTES}"))
        parts[-1].write_bytes(data[k:k + PART_BYTES])
    return parts


if __name__ == "__main__":
    sys.exit(main())
