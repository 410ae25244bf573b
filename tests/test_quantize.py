"""Compression stage: pruning (structured, unstructured), INT8 (PTQ, QAT), the compressed.pt handoff,
the retention gate and edge-quantize, on the session's phantom-trained network (conftest.phantom_run)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

pytest.importorskip("nncf")
pytest.importorskip("torch_pruning")

from conftest import PHANTOM_VAL_N, scaled_gate  # noqa: E402
from edge.config import ModelConfig  # noqa: E402
from edge.retention import Thresholds, thresholds_from  # noqa: E402
from models.checkpoint import load_model, save_weights, with_config  # noqa: E402
from models.data import Labels, load_images, read_labels, read_split  # noqa: E402
from quantize.compressed import load_compressed, save_compressed  # noqa: E402
from quantize.gate import RetentionGate  # noqa: E402
from quantize.ptq import pick_calibration, quantize_ptq  # noqa: E402
from quantize.structured import check_consistent, prune_structured  # noqa: E402
from quantize.unstructured import bake, prune_unstructured, sparsity  # noqa: E402

CALIBRATION = 96  # images: enough for stable ranges on phantoms, and quick
PHANTOM_GATE = scaled_gate(PHANTOM_VAL_N)  # the default gate scaled to 119 validation images (conftest)


@dataclass
class Run:
    ckpt: object
    data: object
    split: object
    parent: torch.nn.Module
    cfg: ModelConfig
    train: Labels
    x_train: np.ndarray
    x_calib: np.ndarray
    val: Labels
    x_val: np.ndarray


@pytest.fixture(scope="module")
def run(phantom_run) -> Run:
    parent, _ = load_model(phantom_run / "best.pt")
    data = next(phantom_run.glob("phantoms-*"))
    labels, split = read_labels(data), read_split(phantom_run / "split.json")
    train, val = labels.subset(split["train"]), labels.subset(split["val"])
    x_train = load_images(train.paths(), parent.cfg.input, progress=False)
    calib = set(pick_calibration(train.ids, CALIBRATION))
    x_calib = x_train[[k for k, i in enumerate(train.ids) if i in calib]]
    x_val = load_images(val.paths(), parent.cfg.input, progress=False)
    return Run(phantom_run / "best.pt", data, phantom_run / "split.json", parent, parent.cfg, train, x_train,
               x_calib, val, x_val)


@pytest.fixture(scope="module")
def gate(run) -> RetentionGate:
    assert len(run.val) == PHANTOM_VAL_N, "PHANTOM_GATE is scaled to this many validation images (conftest)"
    return RetentionGate(run.parent, run.x_val, run.val, PHANTOM_GATE)


@pytest.fixture(scope="module")
def ptq(run):
    return quantize_ptq(run.parent, run.x_calib)


def _outputs(model, x) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x))


def _zero_points(onnx_path) -> list[tuple[str, np.ndarray]]:
    """(weights|activations, zero point) of every QuantizeLinear in the file: weights reach theirs from an
    initializer, activations from an op; zero points are initializers or Constant nodes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                   if n.op_type == "Constant"})
    return [("weights" if n.input[0] in consts else "activations", consts[n.input[2]])
            for n in model.graph.node if n.op_type == "QuantizeLinear"]


def test_ptq_keeps_outputs_close_and_passes_the_gate(run, gate, ptq):
    verdict = gate(ptq)
    assert verdict["passed"], verdict["failures"]
    # Measured on the phantom network: p95 4 months (its FP32 MAE is about 11), blank calibration 170.
    assert verdict["agreement"]["p95_abs_months"] < 10.0
    assert not any(k.startswith("__nncf_hooks") for k in run.parent.state_dict())  # the parent is untouched


def test_blank_calibration_fails_the_gate(run, gate):
    # Ranges measured on blank images clip every real activation: a damaged model the gate must stop.
    damaged = quantize_ptq(run.parent, np.zeros_like(run.x_calib[:16]))
    verdict = gate(damaged)
    assert not verdict["passed"]
    assert any(f.startswith("MAE") for f in verdict["failures"]), verdict["failures"]


def test_gate_thresholds_decide(run, ptq):
    # MAE must fall by 100 months overall and in every age band, accuracy and AUC rise by 1: impossible
    strict = RetentionGate(run.parent, run.x_val, run.val, Thresholds(-100.0, -1.0, -1.0, -100.0))(ptq)
    # Every metric must improve: impossible here. The worst tenth by age is not judged on these 119 validation
    # phantoms (tenths of about 12 images, under edge.retention.MIN_BAND_JUDGED): reported in a note instead.
    assert not strict["passed"] and [f.split(" ")[0] for f in strict["failures"]] == ["MAE", "sex", "AUC"]
    assert any("reported, not judged" in n for n in strict["notes"]), strict["notes"]


def test_structured_pruning_narrows_the_per_sex_age_head_too(run):
    # The default model has a third head (age given each sex): pruning once left it 1,024 inputs wide
    # behind an 819-wide trunk, and the first forward pass failed.
    from dataclasses import replace

    from models.inception import BoneAgeNet
    parent = BoneAgeNet(replace(run.parent.cfg, sex_heads=True))
    parent.load_state_dict(run.parent.state_dict(), strict=False)
    pruned = prune_structured(parent.eval(), 0.3, run.x_calib)
    check_consistent(pruned)
    assert pruned.age_by_sex_head.in_features == pruned.age_head.in_features < parent.age_head.in_features
    with torch.no_grad():
        age, logit, by_sex = pruned(torch.from_numpy(run.x_val[:4]))
    assert by_sex.shape == (4, 2) and bool(torch.isfinite(by_sex).all())


def test_structured_pruning_is_consistent_and_reloads(run, tmp_path):
    pruned = prune_structured(run.parent, 0.3, run.x_calib)
    check_consistent(pruned)
    assert pruned.age_head.out_features == pruned.sex_head.out_features == 1
    assert pruned.se[0].fc2.out_channels == pruned.age_head.in_features < run.parent.age_head.in_features
    n_parent, n_pruned = (sum(p.numel() for p in m.parameters()) for m in (run.parent, pruned))
    assert n_pruned < 0.7 * n_parent
    save_compressed(tmp_path / "compressed.pt", pruned, run.cfg, {})  # fp32, no NNCF: exact
    for a, b in zip(_outputs(load_compressed(tmp_path / "compressed.pt")[0], run.x_val[:8]),
                    _outputs(pruned, run.x_val[:8])):
        assert torch.equal(a, b)
    save_weights(tmp_path / "pruned.pt", pruned)
    reloaded, _ = load_model(tmp_path / "pruned.pt")
    # save_weights stores half precision: the reload equals the pruned model with fp16-rounded weights.
    with torch.no_grad():
        for v in pruned.state_dict().values():
            if v.is_floating_point():
                v.copy_(v.half().float())
    for a, b in zip(_outputs(reloaded, run.x_val[:8]), _outputs(pruned, run.x_val[:8])):
        assert torch.equal(a, b)


def test_pruning_95_percent_of_channels_fails_the_gate(run, gate):
    verdict = gate(prune_structured(run.parent, 0.95, run.x_calib))
    assert not verdict["passed"]


def test_unstructured_pruning_zeroes_weights_but_not_the_heads(run):
    masked = prune_unstructured(run.parent, 0.5, run.x_calib)
    plain = bake(masked)
    assert type(plain) is type(run.parent)
    assert 0.45 < sparsity(plain) < 0.55 and sparsity(run.parent) < 0.01
    assert torch.equal(plain.age_head.weight, run.parent.age_head.weight)
    for a, b in zip(_outputs(plain, run.x_val[:8]), _outputs(masked, run.x_val[:8])):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_compressed_round_trip_to_onnx_runtime(run, tmp_path):
    import onnxruntime as ort

    from export.onnx_export import export_onnx, fold_weight_quantizers

    model = quantize_ptq(prune_structured(run.parent, 0.3, run.x_calib), run.x_calib)
    save_compressed(tmp_path / "compressed.pt", model, run.cfg, {"methods": ["structured 0.3", "int8-ptq"]})
    loaded, cfg, info = load_compressed(tmp_path / "compressed.pt")
    assert cfg == run.cfg and info["methods"] == ["structured 0.3", "int8-ptq"]
    x = run.x_val[:16]
    for a, b in zip(_outputs(loaded, x), _outputs(model, x)):
        assert torch.equal(a, b)

    onnx_path = export_onnx(loaded, cfg, tmp_path / "int8.onnx")
    zps = _zero_points(onnx_path)
    assert {kind for kind, _ in zps} == {"weights", "activations"}
    assert all(zp.dtype == np.int8 and not zp.any() for _, zp in zps)  # symmetric signed INT8 throughout
    age_z, logit = _outputs(loaded, x)
    torch_age, torch_p = age_z.numpy() * cfg.age_std + cfg.age_mean, torch.sigmoid(logit).numpy()
    for folded in (False, True):  # as exported, and with int8 weight initializers as edge-export ships it
        if folded:
            assert fold_weight_quantizers(onnx_path) > 0
        age, p_male = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
        # An activation on a rounding boundary can round differently in the two runtimes, and this phantom
        # network amplifies one step: 1e-5 of input noise moves the torch INT8 model itself by 0.45 months
        # (p95), 1.6 at most. Measured ONNX Runtime vs torch: 0.7 p95, 2.2 max on 64 images.
        diff = np.abs(age - torch_age)
        assert np.percentile(diff, 95) < 1.5 and diff.max() < 3.0, diff
        np.testing.assert_allclose(p_male, torch_p, atol=0.02)


def test_qat_trains_and_round_trips(run, gate, tmp_path):
    from quantize.qat import quantize_qat

    n = 128
    model = quantize_qat(run.parent, run.x_calib, run.x_train[:n], run.train.age[:n], run.train.male[:n],
                         epochs=1, progress=False)
    assert not torch.equal(model.age_head.weight, run.parent.age_head.weight)  # it did train
    # One epoch on 128 images moves the model (measured: MAE +0.45 months, p95 |d| 4.0), not arbitrarily: the gate's
    # overall MAE bound and PTQ's agreement bound. Its worst tenth by age (12 images) and its sex accuracy (at chance
    # on phantoms) swing run to run (+2.8 / +5.0 months, +0.025 / -0.050): edge-quantize's gate judges those.
    verdict = gate(model)
    assert verdict["delta"]["mae"] <= PHANTOM_GATE.max_mae_increase, verdict["delta"]
    assert verdict["agreement"]["p95_abs_months"] < 10.0
    save_compressed(tmp_path / "qat.pt", model, run.cfg, {})
    loaded, _, _ = load_compressed(tmp_path / "qat.pt")
    for a, b in zip(_outputs(loaded, run.x_val[:8]), _outputs(model, run.x_val[:8])):
        assert torch.equal(a, b)


def _cli(run, out, *extra) -> int:
    from quantize.cli import main

    return main(["--checkpoint", str(run.ckpt), "--data", str(run.data), "--out", str(out),
                 "--split-file", str(run.split), "--calibration-size", str(CALIBRATION), "--no-progress", *extra])


def test_cli_combines_methods_and_writes_a_loadable_model(run, tmp_path):
    # Thresholds opened wide from the command line: this checks the plumbing, not the accuracy.
    rc = _cli(run, tmp_path, "--prune-structured", "0.2", "--prune-unstructured", "0.3", "--int8", "ptq",
              "--max-mae-increase", "1000", "--max-accuracy-drop", "1", "--max-auc-drop", "1",
              "--max-band-mae-increase", "1000")
    assert rc == 0
    summary = json.loads((tmp_path / "retention.json").read_text())
    assert summary["passed"] and list(summary["rows"]) == [
        "structured 0.2", "structured 0.2 + unstructured 0.3", "structured 0.2 + unstructured 0.3 + int8 ptq"]
    model, cfg, info = load_compressed(tmp_path / "compressed.pt")
    assert [m["method"] for m in info["methods"]] == ["structured", "unstructured", "int8-ptq"]
    assert info["methods"][-1]["signed_activations"] is True  # what edge-export checks (--compressed)
    assert info["calibration"]["n"] == CALIBRATION and info["retention"]["passed"]
    assert model.age_head.in_features < run.parent.age_head.in_features


def test_cli_refuses_a_model_that_fails_the_gate(run, tmp_path, capsys):
    (tmp_path / "compressed.pt").write_bytes(b"an earlier run's model")
    assert _cli(run, tmp_path, "--prune-structured", "0.95", "--max-mae-increase", str(PHANTOM_GATE.max_mae_increase),
                "--max-accuracy-drop", "1", "--max-auc-drop", "1") == 1
    assert not (tmp_path / "compressed.pt").exists()
    assert json.loads((tmp_path / "retention.json").read_text())["passed"] is False
    printed = capsys.readouterr().out
    assert "FAIL" in printed and "an earlier run's model" in printed  # the old compressed.pt is gone, and said so
    assert not (tmp_path / "rejected.pt").exists()


def test_a_failed_gate_removes_an_earlier_runs_compressed_model(tmp_path):
    # Left in place, edge-export --compressed OUT/compressed.pt would ship the old model beside this run's FAIL.
    from quantize.cli import write_results

    (tmp_path / "compressed.pt").write_bytes(b"old")
    rows = {"int8 ptq": {"passed": False, "failures": ["MAE +1.000 months > 0.25"]}}
    info = {"methods": [], "calibration": {}, "parent": {}, "created": "2026-11-30T00:00:00+00:00"}
    assert write_results(tmp_path, None, None, info, rows, "int8 ptq") == 1
    assert not (tmp_path / "compressed.pt").exists()
    assert json.loads((tmp_path / "retention.json").read_text())["passed"] is False


def test_cli_keeps_a_rejected_model_only_under_its_own_name(run, tmp_path, capsys):
    from quantize.compressed import load_compressed

    assert _cli(run, tmp_path, "--prune-structured", "0.95", "--max-accuracy-drop", "1", "--max-auc-drop", "1",
                "--max-mae-increase", str(PHANTOM_GATE.max_mae_increase), "--keep-rejected") == 1
    assert not (tmp_path / "compressed.pt").exists()
    _net, _cfg, info = load_compressed(tmp_path / "rejected.pt")
    assert info["retention"]["passed"] is False
    assert "benchmarking only" in capsys.readouterr().out


def test_edge_export_ships_both_compressed_models_end_to_end(run, tmp_path):
    # edge-quantize twice (signed activations for the ONNX file, unsigned for OpenVINO), then edge-export
    # --compressed A --compressed-openvino B: each file holds its own model, and the bundle says where each came from.
    from edge.backends import BackendUnavailable
    from edge.runtime import BoneAgeModel
    from export.cli import main as export_main

    gate = ["--max-mae-increase", str(PHANTOM_GATE.max_mae_increase), "--max-accuracy-drop",
            str(PHANTOM_GATE.max_accuracy_drop), "--max-auc-drop", str(PHANTOM_GATE.max_auc_drop),
            "--max-band-mae-increase", str(PHANTOM_GATE.max_band_mae_increase)]
    signed, unsigned, bundle = tmp_path / "signed", tmp_path / "unsigned", tmp_path / "bundle"
    assert _cli(run, signed, "--int8", "ptq", *gate) == 0
    assert _cli(run, unsigned, "--int8", "ptq", "--activations", "unsigned", *gate) == 0
    samples = sorted((run.data / "images").glob("*.png"))[-2:]
    args = ["--checkpoint", str(run.ckpt), "--out", str(bundle), "--samples", *map(str, samples)]
    with pytest.raises(SystemExit, match="activations are not signed"):  # swapped files are refused
        export_main([*args, "--compressed", str(unsigned / "compressed.pt")])
    assert export_main([*args, "--compressed", str(signed / "compressed.pt"),
                        "--compressed-openvino", str(unsigned / "compressed.pt")]) == 0
    meta = json.loads((bundle / "bundle.json").read_text())
    _, _, s_info = load_compressed(signed / "compressed.pt")
    _, _, u_info = load_compressed(unsigned / "compressed.pt")
    assert meta["compression"] == s_info["methods"] and meta["retention"] == s_info["retention"]
    assert meta["openvino_int8"]["activations"] == "unsigned"
    assert meta["openvino_int8"]["compression"] == u_info["methods"]
    assert {a["path"] for a in meta["artifacts"]} >= {"model-int8.onnx", "openvino/model-int8.xml"}
    # ONNX Runtime INT8 runs the signed model (edge-quantize's, not a PTQ made in export): on the bundle's own
    # samples it reproduces that torch model within the round trip's bound (test_compressed_round_trip_to_onnx_runtime).
    signed_net, cfg, _ = load_compressed(signed / "compressed.pt")
    model = BoneAgeModel.load(bundle, backend="onnxruntime", precision="int8", check=False)
    x = np.stack([_pre(p, cfg) for p in samples])
    want = _outputs(signed_net, x)[0].numpy() * cfg.age_std + cfg.age_mean
    assert np.abs(model.run_arrays(x)[0] - want).max() < 3.0
    try:
        assert BoneAgeModel.load(bundle, backend="openvino", precision="int8").backend_name == "openvino"
    except BackendUnavailable as e:  # refused where OpenVINO's INT8 computes wrongly (test_runtime.accepted)
        assert "gives wrong outputs on this machine" in str(e)


def _pre(path, cfg):
    from edge.preprocess import preprocess
    return preprocess(path, cfg.input)


def test_cli_defaults_are_the_gate_defaults():
    from quantize.cli import parse_args

    args = parse_args(["--checkpoint", "c.pt", "--data", "d", "--out", "o", "--int8", "ptq"])
    assert thresholds_from(args) == Thresholds()
    assert args.finetune_epochs is None and args.calibration_size == 300
    required = ["--checkpoint", "c.pt", "--data", "d", "--out", "o"]
    assert args.activations == "signed"  # ONNX Runtime and TensorRT's; unsigned is asked for (OpenVINO's)
    for bad in ([], ["--prune-structured", "1.5"], ["--int8", "qat", "--finetune-epochs", "0"],
                ["--int8", "qat", "--finetune-epochs", "1", "--activations", "unsigned"]):
        with pytest.raises(SystemExit):  # argparse error, exit code 2
            parse_args(required + bad)


def test_ptq_does_not_clamp_ages_outside_the_calibration_range(run):
    # With views averaged in the graph, NNCF put a quantizer on the age head's output (the input of the
    # mean over views). Its range is symmetric, +-max|z| over calibration: every child further from the
    # mean age than any calibration image got that edge (42 months on the RSNA model). Calibrate on the
    # central ages only; the tails must still track FP32.
    parent = with_config(run.parent, flip_tta=True)
    age_fp32 = _outputs(parent, run.x_train)[0].numpy()
    central = np.abs(age_fp32) < np.quantile(np.abs(age_fp32), 0.5)
    int8 = quantize_ptq(parent, run.x_train[central][:CALIBRATION])
    age_int8 = _outputs(int8, run.x_train)[0].numpy()
    edge = np.abs(age_fp32[central]).max()
    tails = np.abs(age_fp32) > edge + 0.3
    assert tails.sum() >= 10, "the test needs ages outside the calibrated range"
    beyond = np.abs(age_fp32[tails]) - edge  # how far a clamp at the edge would pull them
    assert np.abs(age_int8[tails]).max() > edge + 0.3, "INT8 ages are clamped at the calibration range"
    assert np.abs(age_int8[tails] - age_fp32[tails]).mean() < 0.5 * beyond.mean()
