"""INT8 post-training quantization with NNCF, calibrated on training images through edge.preprocess.

Quantization scheme: symmetric INT8 everywhere (zero point 0), signed activations, per-channel weights.
TensorRT's explicit quantization accepts only that: "quantized values are represented in signed INT8"
(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html), and
its ONNX parser rejects UINT8 QuantizeLinear (onnx/onnx-tensorrt#884). The PERFORMANCE preset makes
weights and activations symmetric, but NNCF gives post-ReLU activations unsigned [0, 255] (uint8 zero
points); OpenVINO and ONNX Runtime would run them, TensorRT would not.
The OpenVINO artifact is the exception: OpenVINO 2026.4.1 ran the signed model wrongly (80-110 months off) on
both EPYCs measured (AVX2-only and AVX-512 VNNI) and the unsigned one right (benchmarks/openvino_int8_check.py),
so edge-export quantizes it with signed=False.
"""
from __future__ import annotations

import hashlib

import nncf
import numpy as np
import torch
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

from edge.config import InputSpec
from models.data import load_images, read_labels, read_split

PRESET = nncf.QuantizationPreset.PERFORMANCE
# Calibration batches. With batchwise_statistics=False NNCF sets an activation's range to the mean, over
# batches, of each whole batch's min/max (MEAN_MINMAX), so the batch size decides how much of the tail is
# clipped. Measured on a phantom-trained w035 network with 96 calibration images: per-image ranges
# (batch 1) moved validation outputs by 35 months (p95) from FP32, batch 16 by 4.5 months, and took
# 29 s of CPU instead of 6.5 s.
CALIBRATION_BATCH = 16
ADVANCED = AdvancedQuantizationParameters(batchwise_statistics=False)
# Kept in FP32: the in-network resize (ModelConfig.net_size) and the three stem convolutions. Measured on
# the net_size-128 model (validation, 2,484 images): INT8 everywhere lost 2.3 points of sex accuracy (gate:
# 1); INT8 with Mixed_7, the SE gate and both heads in FP32 still lost 2.3; unsigned activations 1.5; with
# the resize and stem in FP32 the loss was 0.0 points and +0.04 months. Patterns match nothing in a model
# without net_size (validate=False), where only the stem stays FP32.
# types=["mean"]: NNCF quantizes the input of the mean over views, i.e. the age head's output, to +-max|z| seen
# in calibration; children further from the mean age saturate (every young child got 42 months: v4, 2026-11-28).
FP32_SCOPE = nncf.IgnoredScope(patterns=[r".*resize.*", r".*Conv2d_1a.*", r".*Conv2d_2a.*", r".*Conv2d_2b.*"],
                               types=["mean"], validate=False)
# The OpenVINO artifact (unsigned activations) keeps only the resize and the first convolution in FP32. Measured
# on v8.1 (299 px in, 224 inside; validation, gated against FP32): Conv2d_2a/2b in INT8 +0.02 months and -0.24
# points of sex accuracy (the whole stem: +0.13, -0.93), and OpenVINO INT8 1.09-1.10x faster at batch 1 on the
# AVX2 EPYC (13.2 -> 12.0 ms, 60-100 interleaved calls): Conv2d_2b was its slowest layer, in FP32.
# docs/EXPERIMENTS.md, 2026-11-30.
OPENVINO_FP32_SCOPE = nncf.IgnoredScope(patterns=[r".*resize.*", r".*Conv2d_1a.*"], types=["mean"], validate=False)
UNSIGNED_ACTIVATIONS = "int8 symmetric per-tensor (unsigned after ReLU: the OpenVINO artifact)"
SCHEME = {"preset": "performance", "weights": "int8 symmetric per-channel",
          "activations": "int8 symmetric per-tensor (signed)",
          "fp32_layers": "in-network resize, the stem (Conv2d_1a, 2a, 2b) and the heads' outputs (mean over views)", "tool": f"nncf {nncf.__version__}"}
OPENVINO_SCHEME = {**SCHEME, "activations": UNSIGNED_ACTIVATIONS,
                   "fp32_layers": "in-network resize, the first convolution (Conv2d_1a) and the heads' outputs "
                                  "(mean over views)"}
BY_ACTIVATIONS = "by activations"  # quantize_ptq's default scope: FP32_SCOPE signed, OPENVINO_FP32_SCOPE unsigned


def scheme(signed: bool) -> dict:
    return SCHEME if signed else OPENVINO_SCHEME


def quantize_ptq(model: torch.nn.Module, x: np.ndarray, fp32_scope: nncf.IgnoredScope | str | None = BY_ACTIVATIONS,
                 signed: bool = True) -> torch.nn.Module:
    """FP32 model + (N, C, H, W) preprocessed calibration images -> a quantized copy (eval mode).

    NNCF collects activation ranges over all N images (about 300 is NNCF's default) and applies fast
    bias correction. nncf.quantize works on a deep copy: the input model is not changed.
    fp32_scope: the layers kept FP32 (None: none); by default FP32_SCOPE, or OPENVINO_FP32_SCOPE with signed=False
    (unsigned post-ReLU activations, not TensorRT-compatible: the OpenVINO artifact, module docstring); other
    scopes are for experiments (benchmarks/int8_scope_trials.py).
    """
    if fp32_scope == BY_ACTIVATIONS:
        fp32_scope = FP32_SCOPE if signed else OPENVINO_FP32_SCOPE
    dataset = calibration_dataset(x, CALIBRATION_BATCH)
    quantized = nncf.quantize(model.eval(), dataset, preset=PRESET, subset_size=dataset.get_length(),
                              ignored_scope=fp32_scope or nncf.IgnoredScope(), advanced_parameters=ADVANCED)
    if signed:
        quantized = signed_activations(quantized)
    quantized = use_qdq_export(quantized).eval()
    snap_weights(quantized, x[:1])
    return quantized


@torch.no_grad()
def snap_weights(model: torch.nn.Module, example: np.ndarray) -> int:
    """Store every quantized weight as its INT8 value (times its scale); returns how many.

    forward() is unchanged (quantizing an on-grid weight gives it back), but the exported file then
    agrees with it: NNCF rounds (w - low) * (levels - 1) / range, ONNX and export.onnx_export's int8
    folding round w / scale, and the two split ties differently, which fp16-stored weights hit often
    (6 of the 144 first-layer weights of a phantom network). Measured on that network, ONNX Runtime
    moved from 2.9 to 0.7 months p95 away from the torch INT8 model (1e-5 of input noise moves the torch
    model itself by 0.45). Weights are found as the quantizer inputs that are parameters.
    """
    from nncf.torch.quantization.layers import BaseQuantizer

    params = {p.data_ptr(): p for p in model.parameters()}
    snapped = {}

    def keep(module, args, out):
        param = params.get(args[0].data_ptr())
        if param is not None and param.shape == out.shape:
            snapped[param] = out.detach().clone()

    handles = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, BaseQuantizer)]
    try:
        model.eval()(torch.from_numpy(np.ascontiguousarray(example)))
    finally:
        for handle in handles:
            handle.remove()
    for param, value in snapped.items():
        param.copy_(value)
    return len(snapped)


def signed_activations(model: torch.nn.Module) -> torch.nn.Module:
    """Make every unsigned (post-ReLU) quantizer signed, keeping its calibrated range.

    NNCF cannot be asked for this up front: AdvancedQuantizationParameters(activations_quantization_params=
    QuantizationParameters(signedness_to_force=True)) raises "Quantization parameter constraints ...
    incompatible with HW config type 'ANY'" (its hardware configs leave activation sign open).
    [0, max] then maps to 0..127 instead of 0..255: the 7 bits TensorRT itself uses after ReLU
    (NVIDIA/TensorRT#2081). The flag is a buffer, so it is saved with the state_dict.
    """
    from nncf.torch.quantization.layers import SymmetricQuantizer

    for module in model.modules():
        if isinstance(module, SymmetricQuantizer) and not module.signed:
            module.signed = True
    return model


def calibration_dataset(x: np.ndarray, batch_size: int) -> nncf.Dataset:
    """nncf.Dataset over preprocessed arrays in batches (NNCF's subset_size counts these batches);
    transform_fn turns a batch into the model's input tensor."""
    batches = [x[s:s + batch_size] for s in range(0, len(x), batch_size)]
    return nncf.Dataset(batches, lambda b: torch.from_numpy(np.ascontiguousarray(b)))


def use_qdq_export(model: torch.nn.Module) -> torch.nn.Module:
    """Make NNCF's quantizers export as ONNX QuantizeLinear/DequantizeLinear pairs.

    Their default export mode writes OpenVINO's custom FakeQuantize op (org.openvinotoolkit domain),
    which neither ONNX Runtime nor TensorRT can run. Only tracing is affected; forward() is unchanged.
    Weights export as FP32 initializers -> QuantizeLinear (export.onnx_export.fold_weight_quantizers
    turns those into int8 initializers).
    """
    from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

    for module in model.modules():
        if isinstance(module, BaseQuantizer):
            module.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    return model


def pick_calibration(ids: list[str], size: int, seed: int = 0) -> list[str]:
    """A seeded random subset (the training split is sorted by id, so its head is not a random sample)."""
    if size >= len(ids):
        return list(ids)
    keep = np.random.default_rng(seed).choice(len(ids), size, replace=False)
    return [ids[k] for k in sorted(keep)]


def calibration_info(ids: list[str], data, split_file) -> dict:
    """What the bundle records about the calibration set, with a hash of its ids to recognise it."""
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return {"data": str(data), "split_file": str(split_file) if split_file else None, "part": "train",
            "n": len(ids), "ids_sha256": digest}


def calibration_arrays(data, spec: InputSpec, size: int = 300, split_file=None, seed: int = 0,
                       progress: bool = True) -> tuple[np.ndarray, dict]:
    """Labelled data folder -> (calibration images as (N, C, H, W), calibration_info).

    Images come from the training part of `split_file` when given (never the validation or test images
    the retention gate and the bundle's metrics use), else from all labelled images in `data`.
    """
    labels = read_labels(data)
    ids = read_split(split_file)["train"] if split_file else labels.ids
    ids = pick_calibration(ids, size, seed)
    x = load_images(labels.subset(ids).paths(), spec, progress=progress)
    return x, calibration_info(ids, data, split_file)
