"""INT8 quantization-aware training with NNCF: post-training quantization first (it initialises every
quantizer's range), then a short fine-tune through the fake-quantizers, which trains the weights and the
quantizer scales together, as in NNCF's QAT example (quantization_aware_training/torch/resnet18)."""
from __future__ import annotations

import numpy as np
import torch

from quantize.finetune import finetune
from quantize.ptq import quantize_ptq, snap_weights

# OpenVINO's QAT guide asks for "a few epochs with a small learning rate, for example, 10e-5"
# (docs: compressing-models-during-training/quantization-aware-training-pytorch). Measured on a phantom
# network, one epoch at 1e-4 moved the outputs 15-17 months (p95) from the parent, at 1e-5 by 6-9.
QAT_LR = 1e-5


def quantize_qat(model: torch.nn.Module, x_calib: np.ndarray, x_train: np.ndarray, age_months: np.ndarray,
                 male: np.ndarray, epochs: int = 1, lr: float = QAT_LR, progress: bool = True,
                 **finetune_kwargs) -> torch.nn.Module:
    """FP32 model -> quantized copy fine-tuned `epochs` on (x_train, labels); the input model is not changed."""
    if epochs < 1:
        raise ValueError("quantization-aware training needs at least one fine-tune epoch "
                         "(with none it is post-training quantization: use --int8 ptq)")
    quantized = quantize_ptq(model, x_calib)
    trained = finetune(quantized, x_train, age_months, male, epochs, lr=lr, desc="QAT", progress=progress,
                       **finetune_kwargs)
    snap_weights(trained, x_calib[:1])  # training moved the weights off the INT8 grid
    return trained
