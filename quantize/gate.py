"""The retention gate for torch models: every compressed model against its FP32 parent on the same
validation images, judged by edge.retention.retention (the one gate definition)."""
from __future__ import annotations

import numpy as np
import torch

from edge.retention import Thresholds, retention
from models.data import Labels
from models.train import predict_arrays


class RetentionGate:
    """Holds the validation images and the parent's predictions on them, computed once."""

    def __init__(self, parent: torch.nn.Module, x_val: np.ndarray, labels: Labels,
                 thresholds: Thresholds = Thresholds()):
        if len(labels) != len(x_val):
            raise ValueError(f"{len(x_val)} validation images but {len(labels)} labels")
        self.x_val, self.labels, self.thresholds = x_val, labels, thresholds
        self.ref_age, self.ref_p = predict_arrays(parent, x_val)

    def __call__(self, candidate: torch.nn.Module) -> dict:
        """retention() of `candidate` against the parent: metrics, deltas, agreement, `passed`."""
        age, p = predict_arrays(candidate, self.x_val)
        return retention(self.labels.age, self.labels.male, self.ref_age, self.ref_p, age, p, self.thresholds)
