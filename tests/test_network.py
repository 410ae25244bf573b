"""models.inception and models.layers.se: the InceptionV3 trunk, the SE gates and the dual heads."""
from __future__ import annotations

import json

import pytest
import torch

from edge.config import InputSpec, ModelConfig
from models.inception import (MODEL_CONFIGS, BasicConv2d, BoneAgeNet, BoneAgeOutputs, InceptionV3Features,
                              count_params, create_model)
from models.layers.se import SqueezeExcite, make_divisible

# torchvision's inception_v3 without AuxLogits and fc: 27,161,264 - 3,326,696 (aux) - 2,049,000 (fc).
TORCHVISION_TRUNK_PARAMS = 21_785_568

# torchvision.models.inception's BasicConv2d children, block by block (its module names).
_TV_BLOCKS = {
    "A": ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
          "branch_pool"],
    "B": ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
    "C": ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
          "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"],
    "D": ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"],
    "E": ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"],
}
_TV_LAYOUT = ([("Conv2d_1a_3x3", None), ("Conv2d_2a_3x3", None), ("Conv2d_2b_3x3", None), ("Conv2d_3b_1x1", None),
               ("Conv2d_4a_3x3", None)]
              + [(f"Mixed_5{c}", "A") for c in "bcd"] + [("Mixed_6a", "B")]
              + [(f"Mixed_6{c}", "C") for c in "bcde"] + [("Mixed_7a", "D"), ("Mixed_7b", "E"), ("Mixed_7c", "E")])


def torchvision_trunk_keys() -> set[str]:
    convs = [name if block is None else f"{name}.{branch}" for name, block in _TV_LAYOUT
             for branch in ([None] if block is None else _TV_BLOCKS[block])]
    suffixes = ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    return {f"{c}.{s}" for c in convs for s in suffixes}


@pytest.fixture(scope="module")
def trunk():
    torch.manual_seed(0)
    return InceptionV3Features(in_chans=3, width=1.0).eval()


@pytest.fixture(scope="module")
def small_cfg():
    return MODEL_CONFIGS["w035-100"]


# ---------------------------------------------------------------- the trunk is InceptionV3

def test_trunk_parameter_count_matches_torchvision(trunk):
    assert count_params(trunk) == TORCHVISION_TRUNK_PARAMS
    assert trunk.num_features == 2048


@pytest.mark.slow
def test_feature_map_shapes_at_299(trunk):
    seen = {}
    hooks = [getattr(trunk, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape))
             for name in ("Mixed_5d", "Mixed_6e", "Mixed_7c")]
    try:
        with torch.no_grad():
            trunk(torch.randn(1, 3, 299, 299))
    finally:
        for h in hooks:
            h.remove()
    assert seen["Mixed_5d"] == (1, 288, 35, 35)
    assert seen["Mixed_6e"] == (1, 768, 17, 17)
    assert seen["Mixed_7c"] == (1, 2048, 8, 8)


def test_state_dict_keys_follow_torchvision_names(trunk):
    """Checked against torchvision's module layout written out here: torchvision does not import beside torch
    2.13 (../shared/design/TOOLCHAIN.md), so the output match with torchvision's own weights, measured once on
    2026-11-27, is not repeated here; the names, shapes and parameter count are."""
    keys = set(trunk.state_dict())
    expected = torchvision_trunk_keys()
    assert len(expected) == 94 * 6  # 94 BasicConv2d, 6 state entries each
    assert keys == expected, (sorted(keys - expected)[:5], sorted(expected - keys)[:5])


def test_width_multiplier_shrinks_the_trunk(trunk):
    counts = {w: count_params(InceptionV3Features(3, w)) for w in (0.35, 0.5)}
    full = count_params(trunk)
    assert counts[0.35] < counts[0.5] < full
    assert 0.2 < counts[0.5] / full < 0.3  # channels halve -> parameters about a quarter
    assert InceptionV3Features(1, 0.5).num_features == 1024


def test_registered_configs_are_consistent():
    assert count_params(create_model("w035-100")) < count_params(create_model("w050-100"))
    assert MODEL_CONFIGS["paper-299"].input.height == 299
    with pytest.raises(KeyError):
        create_model("resnet50")
    with pytest.raises(ValueError):
        ModelConfig(width=3.0)


# ---------------------------------------------------------------- input size limits

def test_smallest_input_is_75px(small_cfg):
    cfg = small_cfg.with_input(height=75, width=75)
    net = BoneAgeNet(cfg).eval()
    with torch.no_grad():
        age, sex = net(torch.randn(2, 1, 75, 75))
    assert age.shape == sex.shape == (2,)
    with pytest.raises(ValueError, match="75"):
        InputSpec(height=74, width=100)
    with pytest.raises(ValueError, match="75"):
        InputSpec(height=100, width=74)
    # The limit is real: the trunk cannot run at 74 px (Mixed_7a's 3x3 stride-2 convs see a 2x2 map).
    with pytest.raises(RuntimeError):
        with torch.no_grad():
            net(torch.randn(1, 1, 74, 74))


def test_non_square_inputs_work(small_cfg):
    net = BoneAgeNet(small_cfg.with_input(height=128, width=96)).eval()
    with torch.no_grad():
        age, sex = net(torch.randn(1, 1, 128, 96))
    assert age.shape == sex.shape == (1,)


# ---------------------------------------------------------------- heads and SE

@pytest.mark.parametrize("heads, n_gates", [("shared", 1), ("branch", 2)])
def test_forward_returns_age_and_sex_of_shape_n(small_cfg, heads, n_gates):
    from dataclasses import replace

    torch.manual_seed(0)
    net = BoneAgeNet(replace(small_cfg, heads=heads)).eval()
    assert len(net.se) == n_gates and all(isinstance(g, SqueezeExcite) for g in net.se)
    with torch.no_grad():
        age, sex = net(torch.randn(3, 1, 100, 100))
    assert age.shape == (3,) and sex.shape == (3,)
    assert torch.isfinite(age).all() and torch.isfinite(sex).all()


@pytest.mark.slow
def test_branch_heads_have_their_own_gates(small_cfg):
    from dataclasses import replace

    torch.manual_seed(0)
    net = BoneAgeNet(replace(small_cfg, heads="branch")).eval()
    with torch.no_grad():
        for head in (net.age_head, net.sex_head):  # heads start near zero: make them visible
            head.weight.normal_(0, 1)
        x = torch.randn(2, 1, 100, 100)
        age0, sex0 = net(x)
        net.se[1].fc2.bias.add_(3.0)  # change only the sex gate
        age1, sex1 = net(x)
    assert torch.equal(age0, age1)
    assert not torch.allclose(sex0, sex1)


@pytest.mark.slow
def test_shared_gate_feeds_both_heads(small_cfg):
    torch.manual_seed(0)
    net = BoneAgeNet(small_cfg).eval()
    with torch.no_grad():
        for head in (net.age_head, net.sex_head):
            head.weight.normal_(0, 1)
        x = torch.randn(2, 1, 100, 100)
        age0, sex0 = net(x)
        net.se[0].fc2.bias.add_(3.0)
        age1, sex1 = net(x)
    assert not torch.allclose(age0, age1) and not torch.allclose(sex0, sex1)


def test_squeeze_excite_gates_each_channel():
    torch.manual_seed(0)
    se = SqueezeExcite(64, rd_ratio=1 / 16)
    assert se.fc1.out_channels == 8 and se.fc2.out_channels == 64
    x = torch.rand(2, 64, 5, 7) + 0.1
    y = se(x)
    assert y.shape == x.shape
    ratio = y / x  # one gate value in (0, 1) per (sample, channel), the same at every position
    assert ((ratio > 0) & (ratio < 1)).all()
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-6)


@pytest.mark.parametrize("v, expected", [(64, 64), (22.4, 24), (11.2, 16), (3, 8), (100.8, 104), (36, 40)])
def test_make_divisible(v, expected):
    assert make_divisible(v, 8) == expected
    assert make_divisible(v, 8) % 8 == 0 and make_divisible(v, 8) >= 0.9 * v


def test_basic_conv_has_no_conv_bias_and_torchvision_bn_eps():
    b = BasicConv2d(3, 8, kernel_size=3)
    assert b.conv.bias is None and b.bn.eps == 0.001


@pytest.mark.slow
def test_outputs_wrapper_gives_months_and_probability(small_cfg):
    torch.manual_seed(0)
    net = BoneAgeNet(small_cfg).eval()
    wrapped = BoneAgeOutputs(net, age_mean=120.0, age_std=40.0).eval()
    x = torch.randn(4, 1, 100, 100)
    with torch.no_grad():
        age_z, logit = net(x)
        months, p_male = wrapped(x)
    torch.testing.assert_close(months, age_z * 40.0 + 120.0)
    torch.testing.assert_close(p_male, torch.sigmoid(logit))
    assert ((p_male >= 0) & (p_male <= 1)).all()


@pytest.mark.slow
def test_train_mode_updates_bn_and_eval_is_deterministic(small_cfg):
    torch.manual_seed(0)
    net = BoneAgeNet(small_cfg)
    x = torch.randn(4, 1, 100, 100)
    before = net.features.Conv2d_1a_3x3.bn.running_mean.clone()
    net.train()
    net(x)
    assert not torch.equal(before, net.features.Conv2d_1a_3x3.bn.running_mean)
    net.eval()
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.slow
def test_net_size_upsamples_inside_the_network(small_cfg):
    from dataclasses import replace

    import torch.nn.functional as F

    plain = BoneAgeNet(small_cfg).eval()
    inside = BoneAgeNet(replace(small_cfg, net_size=128)).eval()
    inside.load_state_dict(plain.state_dict())  # net_size adds no parameters
    x = torch.randn(2, 1, 100, 100)
    with torch.no_grad():
        expected = plain(F.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False))
        got = inside(x)
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, atol=1e-5)


@pytest.mark.slow
def test_tta_zooms_average_the_training_warp_views_in_eval_only(small_cfg):
    """Each view is the augmentation's own warp (models.augment.warp), mirrored, then the resize."""
    from dataclasses import replace

    import torch.nn.functional as F

    from models.augment import warp

    torch.manual_seed(0)
    plain = BoneAgeNet(small_cfg).eval()
    views = BoneAgeNet(replace(small_cfg, net_size=112, flip_tta=True, tta_zooms=(0.95, 1.05))).eval()
    views.load_state_dict(plain.state_dict())  # views add no parameters
    assert views.resize.n_views == 6
    x = torch.randn(2, 1, 100, 100)

    def view(z, mirror):
        t = warp(x, torch.tensor([[1 / z, 0, 0], [0, 1 / z, 0]]).expand(2, 2, 3))
        t = t.flip(-1) if mirror else t
        return F.interpolate(t, size=(112, 112), mode="bilinear", align_corners=False)

    with torch.no_grad():
        each = [plain(view(z, m)) for z in (1.0, 0.95, 1.05) for m in (False, True)]
        got = views(x)
    for i in range(2):
        torch.testing.assert_close(got[i], torch.stack([e[i] for e in each]).mean(0), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(each[0][0], each[2][0], atol=1e-4)  # a zoom changes the answer
    views.train()
    torch.manual_seed(1)
    tv = views(x)
    plain112 = BoneAgeNet(replace(small_cfg, net_size=112)).train()
    plain112.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    torch.testing.assert_close(tv[0], plain112(x)[0], atol=1e-4, rtol=1e-4)  # training: one plain view


@pytest.mark.parametrize("zooms", [(1.0,), (0.95, 0.95), (3.0,)])
def test_bad_tta_zooms_are_refused(small_cfg, zooms):
    from dataclasses import replace

    with pytest.raises(ValueError, match="tta_zooms"):
        replace(small_cfg, tta_zooms=zooms)


def test_tta_zooms_survive_the_json_round_trip(small_cfg):
    from dataclasses import replace

    from edge.config import ModelConfig

    cfg = replace(small_cfg, tta_zooms=[0.95, 1.05])
    assert cfg.tta_zooms == (0.95, 1.05)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_net_size_below_75_is_refused(small_cfg):
    from dataclasses import replace

    with pytest.raises(ValueError, match="net_size"):
        replace(small_cfg, net_size=64)


@pytest.mark.slow
def test_flip_tta_averages_the_image_and_its_mirror_in_eval_only(small_cfg):
    from dataclasses import replace

    torch.manual_seed(0)
    plain = BoneAgeNet(small_cfg).eval()
    tta = BoneAgeNet(replace(small_cfg, flip_tta=True)).eval()
    tta.load_state_dict(plain.state_dict())  # flip_tta adds no parameters
    x = torch.randn(3, 1, 100, 100)
    with torch.no_grad():
        a, b = plain(x), plain(x.flip(-1))
        got = tta(x)
    for i in range(2):
        torch.testing.assert_close(got[i], (a[i] + b[i]) / 2, atol=1e-5, rtol=1e-4)
        assert got[i].shape == (3,)
    # The mirror changes the answer (else the test above proves nothing) ...
    assert not torch.allclose(a[0], b[0], atol=1e-4)
    # ... and training sees one pass per image: augmentation already mirrors half of them.
    tta.train()
    plain.train()
    torch.manual_seed(1)
    ta = tta(x)
    torch.manual_seed(1)
    pa = plain(x)
    torch.testing.assert_close(ta[0], pa[0])
