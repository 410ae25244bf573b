"""The age head per sex (models.sex_heads): the ridge fit, its place in the graph, the CLI and training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.checkpoint import load_model, with_config
from models.sex_heads import PENALTIES, fit_ridge, pooled_features, predict_given_sex, with_sex_heads


def test_ridge_recovers_one_linear_model_per_sex():
    rng = np.random.default_rng(0)
    feats, male = rng.normal(size=(4000, 12)), rng.integers(0, 2, 4000)
    true_w, true_b = rng.normal(size=(2, 12)), np.array([-0.5, 0.7])
    age_z = predict_given_sex(true_w, true_b, feats, male) + rng.normal(scale=0.01, size=4000)
    weight, bias = fit_ridge(feats, male, age_z, penalty=1e-3)
    np.testing.assert_allclose(weight, true_w, atol=0.01)
    np.testing.assert_allclose(bias, true_b, atol=0.01)


def test_graph_output_is_the_fitted_head_on_view_averaged_features(phantom_fp32):
    # The fit reads features averaged over views; the graph averages the head's outputs. Linear heads make
    # the two equal, which is what lets a head fitted offline ship inside the mirrored-view graph.
    model = with_config(phantom_fp32, flip_tta=True)
    rng = np.random.default_rng(1)
    weight, bias = rng.normal(scale=0.1, size=(2, model.num_features)), np.array([0.2, -0.3])
    model = with_sex_heads(model, weight, bias)
    x = rng.normal(size=(5, 1, 100, 100)).astype(np.float32)
    with torch.no_grad():
        by_sex = model(torch.from_numpy(x))[2]
    assert by_sex.shape == (5, 2)
    feats = pooled_features(model, x, progress=False)
    for sex in (0, 1):
        want = predict_given_sex(weight, bias, feats, np.full(5, sex))
        np.testing.assert_allclose(by_sex[:, sex].numpy(), want, atol=1e-4)


def test_cli_fits_on_train_picks_the_penalty_on_val_and_keeps_the_rest(phantom_run, phantom_sex_heads):
    old, _ = load_model(phantom_run / "best.pt")
    new, ckpt = load_model(phantom_sex_heads)
    assert new.cfg.sex_heads and not old.cfg.sex_heads
    record = ckpt["sex_heads_fit"]
    assert record["penalty"] in PENALTIES and record["n_train"] > record["n_val"] > 0
    assert record["val_mae_sex_given"] == min(record["trials"].values())
    assert "val_metrics" in ckpt and ckpt["split"]  # the training record travels on
    x = torch.randn(3, 1, 100, 100)
    with torch.no_grad():
        (a0, s0), (a1, s1, by_sex) = old(x), new(x)
    torch.testing.assert_close(a1, a0)
    torch.testing.assert_close(s1, s0)
    assert by_sex.abs().sum() > 0


@pytest.mark.slow
def test_training_with_sex_heads_trains_them(tmp_path):
    from conftest import _train

    assert _train(tmp_path, "--synthetic", "64", "--epochs", "1", "--batch-size", "32", "--sex-heads") == 0
    model, _ = load_model(tmp_path / "best.pt")
    assert model.cfg.sex_heads
    assert model.age_by_sex_head.bias.abs().sum() > 0  # initialised at zero; one epoch moved it

