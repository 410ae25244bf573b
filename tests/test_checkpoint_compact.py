"""models.checkpoint --compact: int8 weights with per-channel scales, read back by load_model like any checkpoint."""
from __future__ import annotations

from dataclasses import replace

import torch

from models.checkpoint import load_model, save_compact, save_weights
from models.inception import MODEL_CONFIGS, BoneAgeNet


def test_a_compact_checkpoint_is_half_the_size_and_reads_nearly_the_same(tmp_path):
    torch.manual_seed(0)
    net = BoneAgeNet(replace(MODEL_CONFIGS["w035-100"], sex_heads=True)).eval()
    for head in net.heads():  # outputs of order one, as a trained network's (the init's are ~0.01)
        torch.nn.init.normal_(head.weight, std=1.0)
    save_weights(tmp_path / "fp16.pt", net)
    save_compact(tmp_path / "int8.pt", net, {"epoch": 5})
    assert (tmp_path / "int8.pt").stat().st_size < 0.6 * (tmp_path / "fp16.pt").stat().st_size
    back, ckpt = load_model(tmp_path / "int8.pt")
    assert ckpt["epoch"] == 5 and ckpt["compact"] == "int8-per-channel" and back.cfg == net.cfg
    w, w_back = net.features.Mixed_7c.branch_pool.conv.weight, back.features.Mixed_7c.branch_pool.conv.weight
    step = w.abs().flatten(1).amax(1) / 127  # one int8 step per output channel
    # half a step of rounding, plus the fp16 scale's own rounding (2**-11 relative, times up to 127 steps)
    assert ((w - w_back).abs().flatten(1).amax(1) <= step * (0.5 + 127 * 2**-11)).all()
    x = torch.randn(2, 1, 100, 100)
    with torch.no_grad():
        for a, b in zip(net(x), back(x)):
            assert (a - b).abs().max() < 0.15 * a.abs().max()  # untrained: every layer amplifies the rounding
