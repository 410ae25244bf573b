"""The model's configuration: one typed definition shared by training, export and every backend.

It travels with every checkpoint and in every bundle.json, so preprocessing is rebuilt from what the
network was trained with, never from defaults that may have drifted.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

RESIZE_POLICIES = ("squash", "pad")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "lanczos")
NORMALIZATIONS = ("image", "fixed")
HEAD_DESIGNS = ("shared", "branch")


@dataclass(frozen=True)
class InputSpec:
    """Everything preprocessing needs to turn a decoded radiograph into the network's input."""

    channels: int = 1
    height: int = 100
    width: int = 100
    # The RSNA 100 px set was squashed to a square with Pillow NEAREST from the originals
    # (measured: identical pixels on all 14 full-resolution ids), so the default reproduces that.
    resize: str = "squash"
    interpolation: str = "nearest"
    # "image": z-score per image, robust to 8/16-bit, DICOM windows and exposure.
    # "fixed": (x - mean) / std on [0, 1] intensities.
    normalize: str = "image"
    mean: float = 0.5
    std: float = 0.25

    def __post_init__(self):
        _check_choice("resize", self.resize, RESIZE_POLICIES)
        _check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        _check_choice("normalize", self.normalize, NORMALIZATIONS)
        if min(self.height, self.width) < 75:
            raise ValueError(f"input size {self.height}x{self.width}: InceptionV3 needs at least 75 px")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")


@dataclass(frozen=True)
class ModelConfig:
    """Network shape plus the input spec and the output de-standardisation."""

    name: str = "boneage-inception-v3-se"
    width: float = 1.0  # channel multiplier: 1.0 is the paper-size InceptionV3
    se_rd_ratio: float = 1 / 16
    heads: str = "shared"  # "shared": one SE gate feeds both heads; "branch": one SE gate per head
    dropout: float = 0.2
    # >0: the network first resizes its input (bilinear) to net_size x net_size. The 100 px data then
    # reaches Mixed_7 as a 2x2 map (at 128) instead of 1x1, while preprocessing stays exactly what
    # made the data, so a full-resolution radiograph still sees the same NEAREST squash as training.
    net_size: int = 0
    # True: in eval mode the network also sees the horizontally mirrored image (RSNA holds left and
    # right hands; training flips half the images) and averages the two predictions. It is part of the
    # exported graph, so every backend and the retention gate see the same model. Measured on the
    # validation split: MAE 11.60 -> 11.13 months, sex accuracy 0.820 -> 0.827, for twice the compute.
    flip_tta: bool = False
    # Zooms about the centre (the training augmentation's own bilinear warp; >1 magnifies) whose
    # predictions are averaged with the unzoomed image's (each mirrored too when flip_tta), inside the
    # graph like the mirror. Measured on the validation split with the v3 weights: mirror alone
    # MAE 10.86, mirror x zooms (0.95, 1, 1.05) 10.52 months, for 3x the compute (benchmarks/tta_trials.py).
    tta_zooms: tuple[float, ...] = ()
    # True: a second age head, one output per sex (female, male), for when the clinician gives the patient's
    # sex; bone age standards are sex-specific. The sex-blind head stays for when sex is not given.
    # Fitted on the default model's frozen features it took test MAE from 10.89 to 9.51; fine-tuned with
    # the network, 9.35 (docs/EXPERIMENTS.md, v5).
    sex_heads: bool = False
    # Non-empty: the model is the mean of one network per size listed, each with its own weights and its own
    # in-network resize to that size (net_size stays 0), all reading the same input; their standardised ages
    # and sex logits are averaged inside the graph, so every backend runs one model. Measured on the validation
    # split: a 160 px and a 192 px network, 10.38 / 10.59 months alone, 10.32 as their mean (docs/EXPERIMENTS.md).
    member_net_sizes: tuple[int, ...] = ()
    # Bone age is regressed standardised; these turn the output back into months.
    age_mean: float = 127.0
    age_std: float = 41.0
    input: InputSpec = field(default_factory=InputSpec)

    def __post_init__(self):
        _check_choice("heads", self.heads, HEAD_DESIGNS)
        if not 0.05 <= self.width <= 2.0:
            raise ValueError(f"width multiplier {self.width} is outside [0.05, 2]")
        if self.net_size and self.net_size < 75:
            raise ValueError(f"net_size {self.net_size}: InceptionV3 needs at least 75 px (0 turns it off)")
        zooms = tuple(float(z) for z in self.tta_zooms)  # JSON gives a list
        if any(not 0.5 <= z <= 2.0 or z == 1.0 for z in zooms) or len(set(zooms)) != len(zooms):
            raise ValueError(f"tta_zooms {list(zooms)}: distinct zooms in [0.5, 2], other than 1 (always included)")
        object.__setattr__(self, "tta_zooms", zooms)
        members = tuple(int(n) for n in self.member_net_sizes)
        if members and (len(members) < 2 or min(members) < 75 or self.net_size):
            raise ValueError(f"member_net_sizes {list(members)}: two or more sizes of at least 75 px, with net_size 0 "
                             "(each member resizes to its own size)")
        object.__setattr__(self, "member_net_sizes", members)

    def members(self) -> list["ModelConfig"]:
        """The config of each network whose mean this model is ([self] for a single network)."""
        if not self.member_net_sizes:
            return [self]
        return [replace(self, member_net_sizes=(), net_size=size) for size in self.member_net_sizes]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        spec = InputSpec(**_known(InputSpec, d.pop("input", {})))
        return cls(input=spec, **_known(cls, d))

    def with_input(self, **changes) -> "ModelConfig":
        return replace(self, input=replace(self.input, **changes))


def _known(cls, d: dict) -> dict:
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return {k: v for k, v in d.items() if k in names}


def _check_choice(what: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
