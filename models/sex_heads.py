"""Give a trained checkpoint an age head per sex (ModelConfig.sex_heads), fitted on its frozen features.

    python -m models.sex_heads IN.pt OUT.pt --data DATA [--split-file SPLIT]

Bone age standards are sex-specific and a clinic always knows the patient's sex, but the network was
trained to guess it. The features feeding the sex-blind age head are kept; a ridge regression on them,
with the sex as an offset and an interaction (so each sex's weights shrink toward shared ones), gives
[age if female, age if male]. Fitted on the training split; the ridge penalty is picked by validation
MAE given the true sex. The test split is not read. Closed form: minutes on a CPU, no retraining.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from edge.progress import Progress
from models.checkpoint import load_model, save_weights
from models.data import load_images, read_labels, read_split
from models.inception import BoneAgeNet

PENALTIES = (0.1, 1.0, 10.0, 100.0)


@torch.no_grad()
def pooled_features(model: BoneAgeNet, x: np.ndarray, batch: int = 64, progress: bool = True) -> np.ndarray:
    """(N, C, H, W) inputs -> (N, F) features the age heads read, averaged over the model's views (the
    heads are linear, so this equals averaging their outputs, as the graph does)."""
    model.eval()
    show = Progress(len(x), "features", enabled=progress)
    parts = []
    for start in range(0, len(x), batch):
        xb = torch.from_numpy(x[start:start + batch])
        pooled = model.pooled_features(model.forward_features(xb, all_views=True))[0]
        parts.append(pooled.reshape(model.resize.n_views, len(xb), -1).mean(0).numpy())
        show(start + len(xb))
    return np.concatenate(parts).astype(np.float64)


def _design(feats: np.ndarray, male: np.ndarray) -> np.ndarray:
    m = male.astype(np.float64)[:, None]
    return np.hstack([feats, np.ones_like(m), m, feats * m])


def fit_ridge(feats: np.ndarray, male: np.ndarray, age_z: np.ndarray, penalty: float) -> tuple[np.ndarray, np.ndarray]:
    """-> (weight (2, F), bias (2,)) of [female, male]: age_z ~ f.w + c + male * (f.w2 + c2)."""
    x = _design(feats, male)
    coef = np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ age_z)
    n = feats.shape[1]
    w, c, c2, w2 = coef[:n], coef[n], coef[n + 1], coef[n + 2:]
    return np.stack([w, w + w2]), np.array([c, c + c2])


def predict_given_sex(weight, bias, feats, male) -> np.ndarray:
    """Standardised age from the row of each image's sex."""
    both = feats @ weight.T + bias
    return both[np.arange(len(feats)), male.astype(int)]


def with_sex_heads(model: BoneAgeNet, weight: np.ndarray, bias: np.ndarray) -> BoneAgeNet:
    from dataclasses import replace

    new = BoneAgeNet(replace(model.cfg, sex_heads=True))
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("age_by_sex_head.") for k in missing), (missing, unexpected)
    new.age_by_sex_head.weight.data = torch.from_numpy(weight).float()
    new.age_by_sex_head.bias.data = torch.from_numpy(bias).float()
    return new.eval()


def fit(model: BoneAgeNet, data, split: dict, progress: bool = True) -> tuple[BoneAgeNet, dict]:
    """The model with fitted sex heads, and a record of the fit (penalty, validation MAE)."""
    labels = read_labels(data)
    cfg = model.cfg
    sets = {}
    for name in ("train", "val"):
        part = labels.subset(split[name])
        x = load_images(part.paths(), cfg.input, progress=False)
        sets[name] = (pooled_features(model, x, progress=progress), np.asarray(part.male), np.asarray(part.age))
    f_tr, m_tr, a_tr = sets["train"]
    f_val, m_val, a_val = sets["val"]
    z_tr = (a_tr - cfg.age_mean) / cfg.age_std
    blind = model.age_head.weight.detach().double().numpy()[0]
    blind_mae = np.abs((f_val @ blind + float(model.age_head.bias.detach())) * cfg.age_std + cfg.age_mean - a_val).mean()
    trials = {}
    for penalty in PENALTIES:
        weight, bias = fit_ridge(f_tr, m_tr, z_tr, penalty)
        pred = predict_given_sex(weight, bias, f_val, m_val) * cfg.age_std + cfg.age_mean
        trials[penalty] = (float(np.abs(pred - a_val).mean()), weight, bias)
    best = min(trials, key=lambda k: trials[k][0])
    record = {"penalty": best, "val_mae_sex_given": trials[best][0], "val_mae_sex_blind": float(blind_mae),
              "trials": {str(k): v[0] for k, v in trials.items()}, "n_train": len(f_tr), "n_val": len(f_val)}
    return with_sex_heads(model, *trials[best][1:]), record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.sex_heads", description=__doc__.splitlines()[0])
    p.add_argument("src", help="trained checkpoint (best.pt)")
    p.add_argument("dst", help="where to write the checkpoint with sex heads")
    p.add_argument("--data", required=True, help="the labelled folder it was trained on")
    p.add_argument("--split-file", help="default: the split recorded in the checkpoint")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    model, ckpt = load_model(args.src)
    if model.cfg.member_net_sizes:
        p.error(f"{args.src} is a mean of networks: fit each member's heads, then combine them (models.ensemble)")
    split_file = args.split_file or ckpt.get("split")
    if not split_file:
        p.error(f"{args.src} records no split; give --split-file")
    new, record = fit(model, args.data, read_split(split_file), progress=not args.no_progress)
    extra = {k: v for k, v in ckpt.items() if k not in ("config", "model")}
    save_weights(args.dst, new, extra | {"sex_heads_fit": record | {"from": str(args.src), "split": split_file}})
    print(f"{args.dst}: penalty {record['penalty']}; validation MAE {record['val_mae_sex_blind']:.2f} months "
          f"sex-blind -> {record['val_mae_sex_given']:.2f} given the sex")
    return 0


if __name__ == "__main__":
    sys.exit(main())
