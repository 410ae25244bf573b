"""Each estimate in clinical context: chronological age, delay and SDS against Greulich-Pyle's reference,
a conformal prediction interval, calibrated P(male), an occlusion heatmap and a printable report.

Torch-free. What is fitted on validation data (intervals, P(male) calibration) is written into bundle.json
by `python -m export.calibrate`; the runtime only reads it (edge.clinical.fit.ClinicalFit).
"""
