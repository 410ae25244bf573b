"""models.widen: a wider network that computes what the narrow one did, and whose copied channels can grow apart."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models.inception import MODEL_CONFIGS, BoneAgeNet
from models.widen import widen


def _trained_looking(width: float = 0.35, **changes) -> BoneAgeNet:
    """A small network whose BatchNorm layers are not the identity (as after training), so a wrong copy shows."""
    torch.manual_seed(0)
    net = BoneAgeNet(replace(MODEL_CONFIGS["w035-100"], width=width, sex_heads=True, **changes))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.2, 0.2)
    return net


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_widened_network_gives_the_same_outputs(mode):
    old = _trained_looking(dropout=0.0)
    new = widen(old, 0.5)
    assert sum(p.numel() for p in new.parameters()) > 1.8 * sum(p.numel() for p in old.parameters())
    old.train(mode == "train"), new.train(mode == "train")  # train: BatchNorm uses the batch's statistics
    x = torch.randn(4, 1, 100, 100)
    tol = 2e-5 if mode == "eval" else 2e-4  # batch statistics sum over more channels: more rounding
    with torch.no_grad():
        for a, b in zip(old(x), new(x)):
            torch.testing.assert_close(b, a, atol=tol, rtol=tol)


def test_copied_channels_grow_apart_in_training():
    new = widen(_trained_looking(dropout=0.0), 0.5)
    conv = new.features.Conv2d_2a_3x3.conv  # reads Conv2d_1a's 16 channels, 8 of them copies of old ones
    opt = torch.optim.SGD(new.parameters(), lr=0.1)
    age, logit, by_sex = new.train()(torch.randn(8, 1, 100, 100))
    (age.square().mean() + logit.mean() + by_sex.mean()).backward()
    opt.step()
    first = new.features.Conv2d_1a_3x3.conv.weight
    old_n = _trained_looking().features.Conv2d_1a_3x3.conv.out_channels
    copies = [j for j in range(old_n, first.shape[0])]
    twins = [j for j in copies if any(torch.equal(first[j], first[k]) for k in range(first.shape[0]) if k != j)]
    assert conv.weight.shape[1] == first.shape[0] and not twins, f"channels {twins} still equal a twin"


def test_a_narrower_width_is_refused():
    with pytest.raises(ValueError, match="cannot widen"):
        widen(_trained_looking(width=0.5), 0.35)
