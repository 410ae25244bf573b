"""Dual-output InceptionV3 + Squeeze-and-Excitation for bone age (regression) and sex (one logit).

Backbone: Szegedy et al., "Rethinking the Inception Architecture for Computer Vision" (arXiv:1512.00567),
written with torchvision's module names so its state_dict loads here unchanged (tests check this where
torchvision is importable). No auxiliary classifier: it only helps ImageNet-scale training.
Order: blocks -> InceptionV3Features -> BoneAgeNet -> MeanOfNetworks -> configs -> create_model.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edge.config import InputSpec, ModelConfig
from models.layers.se import SqueezeExcite, make_divisible
from models.views import ViewResize

Widen = Callable[[int], int]


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int, w: Widen):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, w(64), kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, w(48), kernel_size=1)
        self.branch5x5_2 = BasicConv2d(w(48), w(64), kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, w(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(w(64), w(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(w(96), w(96), kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, w(pool_features), kernel_size=1)
        self.out_channels = w(64) + w(64) + w(96) + w(pool_features)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int, w: Widen):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, w(384), kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, w(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(w(64), w(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(w(96), w(96), kernel_size=3, stride=2)
        self.out_channels = w(384) + w(96) + cin

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, channels_7x7: int, w: Widen):
        super().__init__()
        c7 = w(channels_7x7)
        self.branch1x1 = BasicConv2d(cin, w(192), kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, w(192), kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, w(192), kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, w(192), kernel_size=1)
        self.out_channels = 4 * w(192)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int, w: Widen):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, w(192), kernel_size=1)
        self.branch3x3_2 = BasicConv2d(w(192), w(320), kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, w(192), kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(w(192), w(192), kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(w(192), w(192), kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(w(192), w(192), kernel_size=3, stride=2)
        self.out_channels = w(320) + w(192) + cin

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, w: Widen):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, w(320), kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, w(384), kernel_size=1)
        self.branch3x3_2a = BasicConv2d(w(384), w(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(w(384), w(384), kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, w(448), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(w(448), w(384), kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(w(384), w(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(w(384), w(384), kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, w(192), kernel_size=1)
        self.out_channels = w(320) + 4 * w(384) + w(192)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b3, bd, bp], 1)


class InceptionV3Features(nn.Module):
    """InceptionV3 up to Mixed_7c (N x 2048 x 8 x 8 at 299 px, width 1)."""

    def __init__(self, in_chans: int = 3, width: float = 1.0):
        super().__init__()

        def w(c: int) -> int:
            return make_divisible(c * width, 8)

        self.Conv2d_1a_3x3 = BasicConv2d(in_chans, w(32), kernel_size=3, stride=2)  # N x 32 x 149 x 149
        self.Conv2d_2a_3x3 = BasicConv2d(w(32), w(32), kernel_size=3)  # N x 32 x 147 x 147
        self.Conv2d_2b_3x3 = BasicConv2d(w(32), w(64), kernel_size=3, padding=1)  # N x 64 x 147 x 147
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)  # N x 64 x 73 x 73
        self.Conv2d_3b_1x1 = BasicConv2d(w(64), w(80), kernel_size=1)  # N x 80 x 73 x 73
        self.Conv2d_4a_3x3 = BasicConv2d(w(80), w(192), kernel_size=3)  # N x 192 x 71 x 71
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)  # N x 192 x 35 x 35
        self.Mixed_5b = InceptionA(w(192), 32, w)  # N x 256 x 35 x 35
        self.Mixed_5c = InceptionA(self.Mixed_5b.out_channels, 64, w)  # N x 288 x 35 x 35
        self.Mixed_5d = InceptionA(self.Mixed_5c.out_channels, 64, w)  # N x 288 x 35 x 35
        self.Mixed_6a = InceptionB(self.Mixed_5d.out_channels, w)  # N x 768 x 17 x 17
        self.Mixed_6b = InceptionC(self.Mixed_6a.out_channels, 128, w)
        self.Mixed_6c = InceptionC(self.Mixed_6b.out_channels, 160, w)
        self.Mixed_6d = InceptionC(self.Mixed_6c.out_channels, 160, w)
        self.Mixed_6e = InceptionC(self.Mixed_6d.out_channels, 192, w)  # N x 768 x 17 x 17
        self.Mixed_7a = InceptionD(self.Mixed_6e.out_channels, w)  # N x 1280 x 8 x 8
        self.Mixed_7b = InceptionE(self.Mixed_7a.out_channels, w)
        self.Mixed_7c = InceptionE(self.Mixed_7b.out_channels, w)  # N x 2048 x 8 x 8
        self.num_features = self.Mixed_7c.out_channels
        _init_weights(self)

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x


def _init_weights(module: nn.Module) -> None:
    # torchvision's init_weights=True: truncated normal (std 0.1) convs, unit BN.
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.1, a=-2, b=2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class BoneAgeNet(nn.Module):
    """InceptionV3 trunk (common features) -> SE gate(s) (discrete features) -> age and sex heads.

    heads="shared": one SE gate on the 2048-channel map feeds both heads.
    heads="branch": each head has its own SE gate on the shared map.
    forward() returns (standardised bone age, sex logit), each of shape (N,), and with cfg.sex_heads a third
    output: the standardised bone age given the patient's sex, (N, 2) as [female, male].
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.resize = ViewResize((cfg.input.height, cfg.input.width), cfg.net_size, cfg.tta_zooms, cfg.flip_tta)
        self.features = InceptionV3Features(cfg.input.channels, cfg.width)
        self.num_features = self.features.num_features
        n_gates = 1 if cfg.heads == "shared" else 2
        self.se = nn.ModuleList(SqueezeExcite(self.num_features, cfg.se_rd_ratio) for _ in range(n_gates))
        self.drop = nn.Dropout(cfg.dropout)
        self.age_head = nn.Linear(self.num_features, 1)
        self.sex_head = nn.Linear(self.num_features, 1)
        self.age_by_sex_head = nn.Linear(self.num_features, 2) if cfg.sex_heads else None
        for head in self.heads():
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    def heads(self) -> list[nn.Linear]:
        """The output layers: age, sex and, with cfg.sex_heads, the age given each sex."""
        return [h for h in (self.age_head, self.sex_head, self.age_by_sex_head) if h is not None]

    def forward_features(self, x: torch.Tensor, all_views: bool = False) -> torch.Tensor:
        return self.features(self.resize(x, all_views))

    def pooled_features(self, feats: torch.Tensor) -> list[torch.Tensor]:
        """The gated, pooled features each head reads: [age's, sex's] (one tensor when heads="shared")."""
        return [self.drop(F.adaptive_avg_pool2d(se(feats), 1).flatten(1)) for se in self.se]

    def forward_head(self, feats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = self.pooled_features(feats)
        age = self.age_head(pooled[0]).squeeze(1)
        sex = self.sex_head(pooled[-1]).squeeze(1)
        if self.age_by_sex_head is None:
            return age, sex
        return age, sex, self.age_by_sex_head(pooled[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.resize.n_views > 1 and not self.training:
            return self._forward_views_averaged(x)
        return self.forward_head(self.forward_features(x))

    def _forward_views_averaged(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # One pass over all views as one batch (faster than V batches of N on a CPU), then the mean over
        # views of the standardised age and of the sex logit (ModelConfig.flip_tta, tta_zooms).
        outputs = self.forward_head(self.forward_features(x, all_views=True))
        v = self.resize.n_views
        return tuple(out.reshape(v, -1, *out.shape[1:]).mean(0) for out in outputs)


class MeanOfNetworks(nn.Module):
    """The mean of several BoneAgeNets (ModelConfig.member_net_sizes): each sees the same input through its own
    in-network resize, and forward() returns the members' mean standardised age, sex logit and (with sex heads)
    age per sex, the outputs of one BoneAgeNet. Built from trained networks (models.ensemble), never trained."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(BoneAgeNet(member) for member in cfg.members())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = [member(x) for member in self.members]
        return tuple(torch.stack(parts).mean(0) for parts in zip(*outputs))


class BoneAgeOutputs(nn.Module):
    """What gets exported: bone age in months and P(male), so no backend needs to know the scaling."""

    def __init__(self, net: nn.Module, age_mean: float, age_std: float):
        super().__init__()
        self.net = net
        self.age_mean, self.age_std = float(age_mean), float(age_std)

    def forward(self, x):
        age_z, sex_logit, *by_sex = self.net(x)
        return (age_z * self.age_std + self.age_mean, torch.sigmoid(sex_logit),
                *(a * self.age_std + self.age_mean for a in by_sex))


# Registered variants. The paper's model is the first; the others are the simplified networks
# the paper names as future work, sized for clinic CPUs.
MODEL_CONFIGS: dict[str, ModelConfig] = {
    "paper-299": ModelConfig(name="boneage-inception-v3-se", width=1.0,
                             input=InputSpec(height=299, width=299, resize="pad", interpolation="bilinear")),
    "full-100": ModelConfig(name="boneage-inception-v3-se", width=1.0),
    "w050-100": ModelConfig(name="boneage-inception-v3-se-w050", width=0.5),
    "w035-100": ModelConfig(name="boneage-inception-v3-se-w035", width=0.35),
}


def create_model(cfg: ModelConfig | str) -> BoneAgeNet | MeanOfNetworks:
    """The network a config describes: one BoneAgeNet, or with member_net_sizes the mean of several."""
    if isinstance(cfg, str):
        if cfg not in MODEL_CONFIGS:
            raise KeyError(f"unknown model {cfg!r}; choose from {', '.join(MODEL_CONFIGS)}")
        cfg = MODEL_CONFIGS[cfg]
    return MeanOfNetworks(cfg) if cfg.member_net_sizes else BoneAgeNet(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
