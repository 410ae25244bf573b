"""edge-eval end to end: a checkpoint's metrics on the images it never trained on, equal to the same metrics worked
out here from the network's own outputs; bad input is one line."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from edge.labels import read_labels
from edge.metrics import mae, point_metrics
from edge.preprocess import preprocess
from models.checkpoint import save_weights
from models.data import write_split
from models.evaluate import main
from models.inception import create_model
from models.phantoms import write_phantom_dataset


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained w035-100 network (its outputs are what they are: the test compares, it does not judge) with a
    split naming 24 of 30 phantoms: 12 train, 4 val, 8 test; 6 are named by no split (a clinic's own images)."""
    root = tmp_path_factory.mktemp("eval")
    data = write_phantom_dataset(root / "data", 30, size=96)
    ids = read_labels(data).ids
    split = {"train": ids[:12], "val": ids[12:16], "test": ids[16:24]}
    write_split(split, root / "split.json", 0, str(data))
    torch.manual_seed(0)
    net = create_model("w035-100")
    with torch.no_grad():  # spread the untrained outputs so the metrics are not degenerate
        net.age_head.bias.fill_(0.3)
    save_weights(root / "best.pt", net, {"split": str(root / "split.json"), "data": str(data)})
    return root / "best.pt", data, ids


def _eval(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(map(str, args)))
    return code, out.getvalue(), err.getvalue()


def test_edge_eval_scores_the_held_out_images_as_worked_out_here(checkpoint):
    from models.checkpoint import load_model

    ckpt, data, ids = checkpoint
    code, out, err = _eval("--checkpoint", ckpt, "--data", data, "--json", "--n-boot", "50")
    assert code == 0, err
    r = json.loads(out)
    held_out = ids[16:]  # test + never named; never a training or validation image
    labels = read_labels(data).subset(held_out)
    net, _ = load_model(ckpt)
    x = np.stack([preprocess(p, net.cfg.input) for p in labels.paths()])
    with torch.no_grad():
        age_z, logit = net.eval()(torch.from_numpy(x))[:2]
    age = age_z.numpy() * net.cfg.age_std + net.cfg.age_mean
    want = point_metrics(labels.age, age, labels.male, torch.sigmoid(logit).numpy())
    assert r["n"] == len(held_out) == 14
    for key in ("mae", "mse", "rmse", "icc", "accuracy"):
        assert r[key] == pytest.approx(want[key], rel=1e-4, abs=1e-4), key
    assert r["mae"] == pytest.approx(mae(labels.age, age), rel=1e-4)
    assert set(r["ci"]) >= {"mae", "accuracy"} and r["ci"]["mae"][0] <= r["mae"] <= r["ci"]["mae"][1]


def test_edge_eval_bad_input_is_one_line(checkpoint, tmp_path):
    ckpt, data, _ = checkpoint
    code, out, err = _eval("--checkpoint", tmp_path / "missing.pt", "--data", data)
    assert code == 2 and err.count("\n") == 1 and "missing.pt" in err and "Traceback" not in err
    code, out, err = _eval("--checkpoint", ckpt, "--data", data, "--split-file", tmp_path / "nope.json")
    assert code == 2 and err.count("\n") == 1 and "nope.json" in err
