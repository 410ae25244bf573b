"""edge-train: train the dual-output network on RSNA data (or generated phantoms), resumable.

    edge-train --data ../shared/data/rsna-boneage/train-100px --out runs/w050 --model w050-100 --epochs 40
    torchrun --nproc_per_node 2 -m models.train ...      # DDP (gloo on CPU, nccl on CUDA)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from edge import metrics
from edge.bundle import sha256_file
from models.augment import augment_batch
from models.checkpoint import load_model, save_training_state, save_weights, with_config
from models.data import load_images, make_split, read_labels, read_split, write_split
from models.ema import WeightEMA
from edge.config import INTERPOLATIONS
from models.inception import MODEL_CONFIGS, BoneAgeNet, count_params


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="edge-train", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder with labels.csv + images/ (or an RSNA CSV + images)")
    src.add_argument("--synthetic", type=int, metavar="N", help="train on N generated hand phantoms")
    p.add_argument("--out", required=True, help="run directory (checkpoints, split, log)")
    p.add_argument("--model", default="w050-100", choices=list(MODEL_CONFIGS), help="base configuration")
    p.add_argument("--image-size", type=int, help="input size in px (overrides the model's)")
    p.add_argument("--resize", choices=["squash", "pad"], help="resize policy (overrides the model's)")
    p.add_argument("--interpolation", choices=list(INTERPOLATIONS),
                   help="how images are resized to the input size (overrides the model's; must be what made the data)")
    p.add_argument("--width", type=float, help="channel width multiplier (overrides the model's)")
    p.add_argument("--heads", choices=["shared", "branch"], help="head design (overrides the model's)")
    p.add_argument("--net-size", type=int, help="the network resizes its input to this size first "
                                                "(overrides the model's; also applies to --init-from)")
    p.add_argument("--flip-tta", action="store_true", help="validate (and ship) the mean of the image's and "
                                                           "its mirror's predictions (also applies to --init-from)")
    p.add_argument("--sex-heads", action="store_true", help="also train an age head per sex, for when the "
                                                            "patient's sex is given (models.sex_heads fits one "
                                                            "to a trained model instead)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--sex-weight", type=float, default=0.5, help="weight of the sex BCE in the loss")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.998, metavar="DECAY",
                   help="evaluate and save an exponential moving average of the weights (0: off)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                   help="auto: fp16 autocast on CUDA, fp32 on CPU (bf16 measured no faster there)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--split-file", help="reuse this split (default: make one, seeded, in OUT/split.json)")
    p.add_argument("--init-from", metavar="CKPT", help="start from these weights (and their config) with a "
                                                       "fresh optimizer and schedule: a warm restart")
    p.add_argument("--limit", type=int, help="use only the first N labelled images (smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--augment-p", type=_share, default=1.0, help="share of training images augmented (the rest "
                                                                "are seen exactly as inference sees them)")
    p.add_argument("--teachers", nargs="+", metavar="CKPT", help="distil: also learn these checkpoints' mean "
                                                               "predictions on the training images")
    p.add_argument("--distill-weight", type=_share, default=0.5, help="share of each loss term given to the "
                                                                      "teachers' targets (the rest: the labels)")
    p.add_argument("--keep-epochs", action="store_true", help="also keep each epoch's evaluated weights as "
                                                              "OUT/epoch-NN.pt (fp16), for means of snapshots")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="M",
                   help="within an epoch, save the whole training state to OUT/last.pt every M minutes, so a killed "
                        "run resumes at that step with the same result (0: after every step)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a share must be between 0 and 1")
    return value


def build_config(args, age: np.ndarray):
    cfg = with_input_args(MODEL_CONFIGS[args.model], args)
    changes = {k: v for k, v in (("width", args.width), ("heads", args.heads)) if v is not None}
    changes |= {"sex_heads": True} if args.sex_heads else {}
    return replace(cfg, age_mean=float(age.mean()), age_std=float(age.std()), **changes, **_weightless(args))


def with_input_args(cfg, args):
    """cfg with the command line's input size, resize policy and interpolation. No weight depends on them
    (the network pools globally), so a trained network can start again at another input."""
    changes = {"height": args.image_size, "width": args.image_size} if args.image_size else {}
    changes |= {k: v for k, v in (("resize", args.resize), ("interpolation", args.interpolation)) if v}
    return cfg.with_input(**changes) if changes else cfg


def _weightless(args) -> dict:
    """The command line's changes to settings that no weight depends on."""
    changes = {} if args.net_size is None else {"net_size": args.net_size}
    return changes | ({"flip_tta": True} if args.flip_tta else {})


def amp_dtype(args, device: torch.device):
    if args.amp == "off":
        return None
    if args.amp == "bf16":
        return torch.bfloat16
    if args.amp == "fp16" or (args.amp == "auto" and device.type == "cuda"):
        return torch.float16
    # auto on CPU: fp32. Measured on the 2-core Zen 4 (AVX-512 BF16): width 0.5 at 100 px trained at
    # 166 img/s with bf16 autocast and 171 img/s without, so bf16 buys nothing here.
    return None


@torch.no_grad()
def predict_outputs(model, x: np.ndarray, batch: int = 256, device="cpu") -> dict[str, np.ndarray]:
    """(N, C, H, W) inputs (numpy, or a torch tensor) -> what the exported graph gives (edge.bundle.OUTPUTS): bone age in months,
    P(male) and, with sex heads, bone age given each sex (N, 2)."""
    net = getattr(model, "module", model)
    net.eval()
    parts = []
    for s in range(0, len(x), batch):
        xb = x[s:s + batch]
        xb = (torch.from_numpy(xb) if isinstance(xb, np.ndarray) else xb).to(device)
        xb = xb.contiguous(memory_format=torch.channels_last)
        age_z, logit, *by_sex = net(xb)
        ages = [a.float().cpu().numpy() * net.cfg.age_std + net.cfg.age_mean for a in (age_z, *by_sex)]
        parts.append([ages[0], torch.sigmoid(logit.float()).cpu().numpy(), *ages[1:]])
    names = ["bone_age_months", "p_male", "bone_age_months_by_sex"]
    return {name: np.concatenate(arrays) for name, arrays in zip(names, zip(*parts))}


def predict_arrays(model, x: np.ndarray, batch: int = 256, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W) inputs -> (sex-blind bone age in months, P(male))."""
    out = predict_outputs(model, x, batch, device)
    return out["bone_age_months"], out["p_male"]


def lr_at(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def main(argv=None):
    args = parse_args(argv)
    rank, world = _init_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed + rank)
    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device if args.device == "cpu" else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    log = RunLog(out / "train.log", enabled=rank == 0)

    # [1/4] data and split
    data_dir = _data_dir(args, rank)
    labels = read_labels(data_dir)
    if args.limit:
        labels = labels.subset(labels.ids[: args.limit])
    split_path = Path(args.split_file) if args.split_file else out / "split.json"
    if args.split_file and not split_path.is_file():  # a typo must not silently make a new split
        raise SystemExit(f"edge-train: --split-file {split_path}: no such file")
    if rank == 0 and not split_path.exists():
        write_split(make_split(labels, seed=args.seed), split_path, args.seed, str(data_dir))
    _barrier(world)
    split = read_split(split_path)
    train_l, val_l = labels.subset(split["train"]), labels.subset(split["val"])
    log(f"[1/4] {data_dir}: {len(train_l)} train / {len(val_l)} val / {len(split['test'])} test (split {split_path})")

    # [2/4] model and the state to resume from
    state = _load_state(out / "last.pt")
    if state is None and args.init_from:
        model, _ = load_model(args.init_from)
        if model.cfg.member_net_sizes:
            raise SystemExit(f"{args.init_from}: a mean of networks (models.ensemble) is not trained; "
                             "start from one of its member checkpoints")
        model = with_config(model, **_weightless(args))
        model = with_config(model, input=with_input_args(model.cfg, args).input)
        cfg = model.cfg
        log(f"initialised from {args.init_from}")
    else:
        cfg = build_config(args, train_l.age) if state is None else _config_from(state)
        model = BoneAgeNet(cfg)
    model = model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    start_epoch, start_step, history, best = 0, 0, [], float("inf")
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, history, best = state["epoch"], state["history"], state["best_val_mae"]
        start_step = state.get("step", 0)
        log(f"resumed from {out / 'last.pt'} after epoch {start_epoch}"
            + (f", step {start_step} of epoch {start_epoch + 1}" if start_step else ""))
    log(f"[2/4] {cfg.name} width {cfg.width} heads {cfg.heads}, {count_params(model) / 1e6:.2f} M params, "
        f"input {cfg.input.channels}x{cfg.input.height}x{cfg.input.width} ({cfg.input.resize})")
    ema = WeightEMA(model, args.ema) if args.ema else None
    if ema is not None and state is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    evaluated = ema.model if ema is not None else model  # what validation scores and best.pt holds
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    x_train = load_images(train_l.paths(), cfg.input, progress=rank == 0 and not args.no_progress)
    x_val = load_images(val_l.paths(), cfg.input, progress=False) if rank == 0 else None
    y_age = torch.from_numpy((train_l.age - cfg.age_mean) / cfg.age_std)
    y_sex = torch.from_numpy(train_l.male)
    teacher = None if not args.teachers else _teacher_targets(
        args, cfg, x_train, train_l.ids, out / "teacher-targets.npz", log, rank, world, device)

    # [3/4] train
    dtype = amp_dtype(args, device)
    steps_per_epoch = len(x_train) // (args.batch_size * world)
    total, warmup = steps_per_epoch * args.epochs, int(steps_per_epoch * args.warmup_epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, total, warmup),
                                              last_epoch=start_epoch * steps_per_epoch + start_step - 1)
    if state is not None:  # last: the RNG streams of augmentation and dropout go on where they stopped
        _set_rng_states(state, rank)
    log(f"[3/4] {args.epochs} epochs x {steps_per_epoch} steps, batch {args.batch_size} x {world} process(es), "
        f"autocast {dtype}, device {device}")
    for epoch in range(start_epoch, args.epochs):
        t0 = time.time()
        gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        # The order depends on the seed and the epoch only, so a resumed epoch sees the rest of the same order.
        order = torch.randperm(len(x_train), generator=gen)[rank::world][: steps_per_epoch * args.batch_size]
        step, loss_so_far = (start_step, state.get("loss_sum", 0.0)) if epoch == start_epoch and start_step else (0, 0.0)

        def save_mid_epoch(step_done: int, loss_sum: float) -> None:
            if rank == 0:
                save_training_state(out / "last.pt", model=model.state_dict(), optimizer=opt.state_dict(),
                                    epoch=epoch, step=step_done, loss_sum=loss_sum, history=history,
                                    best_val_mae=best, config=cfg.to_dict(), **_rng_states(),
                                    ema=ema.state_dict() if ema is not None else None)
                log(f"checkpoint: epoch {epoch + 1} step {step_done}/{steps_per_epoch}, "
                    f"mean loss so far {loss_sum / step_done:.4f}, {time.strftime('%Y-%m-%d %H:%M:%S')}")

        loss_sum = _train_epoch(ddp, opt, sched, x_train, y_age, y_sex, order, args, device, dtype,
                                desc=f"epoch {epoch + 1}/{args.epochs}", progress=rank == 0 and not args.no_progress,
                                ema=ema, teacher=teacher, start=step, loss_so_far=loss_so_far,
                                checkpoint=save_mid_epoch if world == 1 else None)
        if rank == 0:
            out_val = predict_outputs(evaluated, x_val, device=device)
            m = metrics.point_metrics(val_l.age, out_val["bone_age_months"], val_l.male, out_val["p_male"])
            row = {"epoch": epoch + 1, "loss": loss_sum, "val_mae": m["mae"], "val_accuracy": m["accuracy"],
                   "val_auc": m["auc"], "lr": sched.get_last_lr()[0], "minutes": (time.time() - t0) / 60}
            score = m["mae"]
            if "bone_age_months_by_sex" in out_val:  # both ages are served: select on their mean
                given = out_val["bone_age_months_by_sex"][np.arange(len(val_l.male)), val_l.male.astype(int)]
                row["val_mae_sex_given"] = float(np.abs(given - val_l.age).mean())
                score = (m["mae"] + row["val_mae_sex_given"]) / 2
            history.append(row)
            improved = score < best
            if improved:
                best = score
                save_weights(out / "best.pt", evaluated, {"epoch": epoch + 1, "val_metrics": m,
                                                      "split": str(split_path), "data": str(data_dir)})
            if args.keep_epochs:
                save_weights(out / f"epoch-{epoch + 1:02d}.pt", evaluated, {"epoch": epoch + 1, "val_metrics": m,
                                                                          "split": str(split_path)})
            log(json.dumps(row) + ("  *best*" if improved else ""))
            save_training_state(out / "last.pt", model=model.state_dict(), optimizer=opt.state_dict(),
                                epoch=epoch + 1, step=0, history=history, best_val_mae=best, config=cfg.to_dict(),
                                **_rng_states(), ema=ema.state_dict() if ema is not None else None)
        _barrier(world)

    # [4/4] summary
    if rank == 0:
        what = "MAE (mean of sex-blind and sex-given)" if cfg.sex_heads else "MAE"
        log(f"[4/4] best validation {what} {best:.2f} months; weights in {out / 'best.pt'}")
        (out / "history.json").write_text(json.dumps(history, indent=1))
    if world > 1:
        dist.destroy_process_group()
    return 0


def _teacher_targets(args, cfg, x_train: np.ndarray, ids: list[str], cache: Path, log, rank: int, world: int,
                     device) -> dict[str, torch.Tensor]:
    """The teachers' mean predictions on the unaugmented training images, in the student's standardised units:
    age_z (N,), p_male (N,), by_sex_z (N, 2). Rank 0 computes them once into the run folder; a resume reuses the
    file only if it was made by the same teachers for the same training images."""
    key = teacher_key(args.teachers, ids, cfg.sex_heads)
    if rank == 0 and _cached_key(cache) != key:
        targets = _teachers_mean(args.teachers, cfg, x_train, log, device) | {"key": np.array(key)}
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **targets)
        os.replace(tmp, cache)  # other ranks never read a half-written file
    _barrier(world)
    with np.load(cache) as z:
        return {k: torch.from_numpy(z[k]) for k in z.files if k != "key"}


def teacher_key(teachers, ids: list[str], sex_heads: bool) -> str:
    """What the cached targets depend on: each teacher's contents (a checkpoint rewritten at the same path, such as
    models/checkpoints/default.pt, makes new targets), the training images and whether per-sex targets exist."""
    return json.dumps({"teachers": [{"path": str(p), "sha256": sha256_file(p)} for p in teachers],
                       "train_ids": list(ids), "sex_heads": sex_heads})


def _cached_key(cache: Path) -> str | None:
    if not cache.exists():
        return None
    with np.load(cache) as z:
        return str(z["key"]) if "key" in z.files else None


def _teachers_mean(paths, cfg, x_train: np.ndarray, log, device) -> dict[str, np.ndarray]:
    outs = []
    for path in paths:
        net, _ = load_model(path)
        if not net.cfg.sex_heads and cfg.sex_heads:
            raise SystemExit(f"{path}: a teacher without sex heads cannot teach a student that has them")
        if net.cfg.input != cfg.input:
            raise SystemExit(f"{path}: a teacher must read the student's input ({cfg.input}), not {net.cfg.input}")
        outs.append(predict_outputs(net.to(device), x_train, device=device))
        log(f"teacher {path}: predictions for {len(x_train)} training images")
    to_z = lambda months: ((months - cfg.age_mean) / cfg.age_std).astype(np.float32)
    targets = {"age_z": to_z(np.mean([o["bone_age_months"] for o in outs], 0)),
               "p_male": np.mean([o["p_male"] for o in outs], 0).astype(np.float32)}
    if cfg.sex_heads:
        targets["by_sex_z"] = to_z(np.mean([o["bone_age_months_by_sex"] for o in outs], 0))
    return targets


def training_loss(age_z, logit, by_sex, y_a, y_s, args, t=None) -> torch.Tensor:
    """Smooth-L1 on the standardised age + weighted BCE on sex (+ smooth-L1 of the true sex's column of the per-sex
    head). With teacher targets `t`, each term is shared with the teachers' prediction (distill_weight), and the
    per-sex head also learns the teachers' age for the other sex, which no label gives."""
    sl1 = lambda a, b: F.smooth_l1_loss(a, b, beta=0.1)
    bce = F.binary_cross_entropy_with_logits
    given = by_sex[0].gather(1, y_s.long()[:, None]).squeeze(1) if by_sex else None
    loss = sl1(age_z, y_a) + args.sex_weight * bce(logit, y_s) + (sl1(given, y_a) if by_sex else 0.0)
    if t is None:
        return loss
    w = args.distill_weight
    taught = sl1(age_z, t["age_z"]) + args.sex_weight * bce(logit, t["p_male"])
    if by_sex:
        taught = taught + sl1(by_sex[0], t["by_sex_z"])
    return (1 - w) * loss + w * taught


def _train_epoch(model, opt, sched, x_train, y_age, y_sex, order, args, device, dtype, desc, progress, ema=None,
                 teacher=None, start=0, loss_so_far=0.0, checkpoint=None):
    """Steps start.. of the epoch's order; returns the epoch's mean loss. checkpoint(steps_done, loss_sum) is called
    every --checkpoint-minutes within the epoch (the epoch's end is saved by the caller, after validation)."""
    model.train()
    n_batches = len(order) // args.batch_size
    it = range(start, n_batches)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=desc, unit="batch", mininterval=5, file=sys.stderr, initial=start, total=n_batches)
    total, last_save = loss_so_far, time.monotonic()
    for b in it:
        idx = order[b * args.batch_size:(b + 1) * args.batch_size]
        xb = torch.from_numpy(x_train[idx.numpy()])
        if not args.no_augment:
            xb = augment_batch(xb, p=args.augment_p)
        xb = xb.to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            age_z, logit, *by_sex = model(xb)
        y_a, y_s = y_age[idx].to(device), y_sex[idx].to(device)
        t = None if teacher is None else {k: v[idx].to(device) for k, v in teacher.items()}
        loss = training_loss(age_z.float(), logit.float(), [b.float() for b in by_sex], y_a, y_s, args, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        total += loss.item()
        if checkpoint is not None and b + 1 < n_batches and time.monotonic() - last_save >= args.checkpoint_minutes * 60:
            checkpoint(b + 1, total)
            last_save = time.monotonic()
    return total / max(1, n_batches)


def _rng_states() -> dict:
    """Every random stream training draws from (augmentation, dropout; numpy and random for completeness)."""
    states = {"rng": torch.get_rng_state(), "np_rng": np.random.get_state(), "py_rng": random.getstate()}
    if torch.cuda.is_available():
        states["cuda_rng"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(state: dict, rank: int) -> None:
    if rank == 0:  # other DDP ranks keep their own seeded streams (only rank 0 saves)
        torch.set_rng_state(state["rng"])
    if "np_rng" in state:
        np.random.set_state(state["np_rng"])
        random.setstate(state["py_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def _data_dir(args, rank: int) -> Path:
    if args.data:
        return Path(args.data)
    from models.phantoms import write_phantom_dataset
    target = Path(args.out) / f"phantoms-{args.synthetic}"
    if rank == 0 and not (target / "labels.csv").exists():
        write_phantom_dataset(target, args.synthetic, size=128, seed=args.seed)
    _barrier(int(os.environ.get("WORLD_SIZE", 1)))
    return target


def _load_state(path: Path):
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def _config_from(state):
    from edge.config import ModelConfig
    return ModelConfig.from_dict(state["config"])


def _init_distributed(device: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        return dist.get_rank(), world
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


class RunLog:
    """Prints a line and appends it to the run's log file (rank 0 only under DDP)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(msg, flush=True)
            with open(self.path, "a") as f:
                f.write(msg + "\n")


if __name__ == "__main__":
    sys.exit(main())
