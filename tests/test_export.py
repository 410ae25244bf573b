"""What export writes: bundle.json, embedded metadata, one FP32 file every CPU backend reads exactly, and an INT8 ONNX
TensorRT can build."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge.backends.tensorrt_backend import build_plan, engine_cache_key
from edge.bundle import load_bundle, sha256_file

# Operators the TensorRT ONNX parser supports (onnx-tensorrt operator matrix) that this network can produce.
TENSORRT_OPS = {"Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Add", "Sub", "Mul",
                "Div", "Sigmoid", "Gemm", "MatMul", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "ReduceMean",
                "QuantizeLinear", "DequantizeLinear", "Identity", "Constant", "Pad", "Shape", "Gather", "Cast",
                "BatchNormalization", "Transpose", "Slice", "Clip"}


def test_bundle_json_lists_every_artifact_with_its_hash(phantom_bundle):
    b = load_bundle(phantom_bundle)
    meta = b.meta
    assert meta["schema_version"] == 1
    paths = {a["path"] for a in meta["artifacts"]}
    assert {"model-fp32.onnx", "model-int8.onnx", "openvino/model-int8.xml", "openvino/model-int8.bin"} <= paths
    assert not any(p.startswith("openvino/model-fp32") for p in paths)  # OpenVINO reads the FP32 ONNX
    for a in meta["artifacts"]:
        assert {"backend", "precision", "path", "sha256", "size"} <= set(a)
        assert sha256_file(phantom_bundle / a["path"]) == a["sha256"]
    assert meta["config"]["input"]["height"] == b.config.input.height
    assert meta["outputs"]["bone_age_months"]["unit"] == "months"
    assert (phantom_bundle / "MODEL_CARD.md").read_text().startswith("# Model card")
    assert (phantom_bundle / "split.json").exists()
    assert meta["calibration"]  # how INT8 was calibrated is recorded


def test_metadata_is_embedded_in_onnx_and_openvino(phantom_bundle):
    import openvino as ov

    props = {p.key: p.value for p in onnx.load(str(phantom_bundle / "model-int8.onnx")).metadata_props}
    embedded = json.loads(props["boneage_bundle"])
    assert embedded["precision"] == "int8" and embedded["config"]["name"]
    model = ov.Core().read_model(str(phantom_bundle / "openvino/model-int8.xml"))
    assert json.loads(model.get_rt_info(["boneage_bundle"]).astype(str))["precision"] == "int8"


def test_openvino_ir_keeps_its_fp32_parts_in_fp32(phantom_bundle):
    # ov.save_model stores FP16 by default: the INT8 IR's FP32 parts (resize, stem, means) must stay FP32.
    xml = (phantom_bundle / "openvino/model-int8.xml").read_text()
    assert 'element_type="f32"' in xml and 'element_type="f16"' not in xml


def test_openvino_prefers_its_own_ir_and_falls_back_to_the_onnx(tmp_path):
    from edge.bundle import Bundle

    def bundle(*paths):
        return Bundle(tmp_path, {"config": {}, "artifacts": [{"precision": p.split("-")[-1].split(".")[0], "path": p}
                                                             for p in paths]})

    old = bundle("model-fp32.onnx", "openvino/model-fp32.xml", "openvino/model-fp32.bin")  # bundles before v7
    assert old.artifact_path("openvino", "fp32", check=False) == tmp_path / "openvino/model-fp32.xml"
    assert old.artifact_path("onnxruntime", "fp32", check=False) == tmp_path / "model-fp32.onnx"
    signed_only = bundle("model-fp32.onnx", "model-int8.onnx")  # edge-export --compressed without an OpenVINO twin
    assert signed_only.artifact_path("openvino", "int8", check=False) == tmp_path / "model-int8.onnx"
    assert bundle("model-int8.onnx").artifact_path("openvino", "fp32", check=False) is None
    assert [c["path"] for c in old.companions("openvino/model-fp32.xml", "fp32")] == [
        "openvino/model-fp32.xml", "openvino/model-fp32.bin"]


def test_openvino_runs_the_fp32_onnx_exactly(phantom_bundle, phantom_data):
    """No FP32 IR ships: OpenVINO reads model-fp32.onnx and must give ONNX Runtime's numbers on real inputs."""
    from edge.runtime import BoneAgeModel

    b = load_bundle(phantom_bundle)
    assert b.artifact_path("openvino", "fp32") == phantom_bundle / "model-fp32.onnx"
    assert b.artifact_path("openvino", "int8") == phantom_bundle / "openvino/model-int8.xml"
    images = sorted((phantom_data / "images").glob("*.png"))[:5]
    ov_fp32 = BoneAgeModel.load(phantom_bundle, backend="openvino", precision="fp32").predict_many(images)
    ort_fp32 = BoneAgeModel.load(phantom_bundle, backend="onnxruntime", precision="fp32").predict_many(images)
    for a, c in zip(ov_fp32, ort_fp32):
        assert abs(a.bone_age_months - c.bone_age_months) < 1e-3 and abs(a.p_male - c.p_male) < 1e-5


def test_int8_onnx_is_symmetric_qdq_with_tensorrt_ops(phantom_bundle):
    model = onnx.load(str(phantom_bundle / "model-int8.onnx"))
    nodes = model.graph.node
    # Constants come as initializers or as Constant nodes (the TorchScript exporter writes the latter).
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    inits.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in nodes if n.op_type == "Constant"})
    ops = {n.op_type for n in nodes}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert ops <= TENSORRT_OPS, f"operators TensorRT may not parse: {ops - TENSORRT_OPS}"
    zero_points = [inits[n.input[2]] for n in nodes
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits]
    assert zero_points, "Q/DQ nodes carry explicit zero points"
    assert all(zp.dtype == np.int8 for zp in zero_points), {str(zp.dtype) for zp in zero_points}
    assert all(np.all(zp == 0) for zp in zero_points)  # TensorRT explicit quantization needs symmetric INT8
    convs = sum(n.op_type == "Conv" for n in nodes)
    # Weights are stored as int8 initializers feeding DequantizeLinear (export.onnx_export.fold_weight_quantizers).
    int8_weights = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    int8_fed = {n.output[0] for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] in int8_weights}
    fp32_convs = sorted(n.name for n in nodes if n.op_type == "Conv" and n.input[1] not in int8_fed)
    # Every convolution has INT8 weights but the three of the stem, kept FP32 (quantize.ptq.FP32_SCOPE), and
    # the SE gate's two 1x1 convolutions on the pooled vector, which NNCF leaves FP32; every head is INT8.
    assert len(fp32_convs) == 5 and convs > 5, fp32_convs
    assert sum("Conv2d_1a" in n or "Conv2d_2a" in n or "Conv2d_2b" in n or "/se" in n for n in fp32_convs) == 5
    assert all(n.input[1] in int8_fed for n in nodes if n.op_type == "Gemm")
    assert not any(i.data_type == onnx.TensorProto.FLOAT and i.name.endswith(".weight") and "conv" in i.name
                   for i in model.graph.initializer)  # and no FP32 copy of them is left behind


def test_openvino_int8_is_its_own_unsigned_model_and_runs_right_here(phantom_bundle):
    # OpenVINO 2026.4.1 ran signed-activation INT8 80-110 months off on both EPYCs measured and the unsigned
    # twin right (benchmarks/openvino_int8_check.py): the bundle ships that twin, and it must pass the
    # load-time self-test on this machine.
    from edge.runtime import BoneAgeModel
    meta = json.loads((phantom_bundle / "bundle.json").read_text())
    assert meta["openvino_int8"]["activations"] == "unsigned" and "activations" not in meta  # ONNX: signed
    assert meta["calibration"] == meta["openvino_int8"]["calibration"]  # same images, other activations
    assert BoneAgeModel.load(phantom_bundle, backend="openvino", precision="int8").backend_name == "openvino"


def test_openvino_int8_keeps_only_the_first_convolution_of_the_stem_in_fp32(phantom_bundle):
    """quantize.ptq.OPENVINO_FP32_SCOPE: Conv2d_2a and 2b run INT8 in OpenVINO (the ONNX model keeps them FP32)."""
    import openvino as ov

    def int8_weights(conv) -> bool:  # weights stored int8, dequantized by Convert/Subtract/Multiply
        node = conv.input_value(1).get_node()
        while node.get_input_size() > 0:
            node = node.input_value(0).get_node()
        return node.get_output_element_type(0) == ov.Type.i8

    model = ov.Core().read_model(str(phantom_bundle / "openvino" / "model-int8.xml"))
    convs = {op.get_friendly_name(): int8_weights(op) for op in model.get_ordered_ops()
             if op.get_type_name() == "Convolution"}
    stem = {k: [v for n, v in convs.items() if f"Conv2d_{k}" in n] for k in ("1a", "2a", "2b")}
    assert stem == {"1a": [False], "2a": [True], "2b": [True]}, convs


def test_tensorrt_engine_cache_key_and_plan():
    a = engine_cache_key("ab" * 32, "int8", "NVIDIA H100 80GB HBM3", "9.0", "10.13.0")
    assert a.startswith("nvidia-h100-80gb-hbm3-sm90-trt10.13.0-int8-") and a.endswith(".engine")
    assert a == engine_cache_key("ab" * 32, "int8", "NVIDIA H100 80GB HBM3", "9.0", "10.13.0")
    others = [engine_cache_key("cd" * 32, "int8", "NVIDIA H100 80GB HBM3", "9.0", "10.13.0"),
              engine_cache_key("ab" * 32, "fp32", "NVIDIA H100 80GB HBM3", "9.0", "10.13.0"),
              engine_cache_key("ab" * 32, "int8", "NVIDIA L4", "8.9", "10.13.0"),
              engine_cache_key("ab" * 32, "int8", "NVIDIA H100 80GB HBM3", "9.0", "11.0.0")]
    assert len({a, *others}) == 5  # artifact, precision, GPU and TensorRT version all change the key
    int8, fp32 = build_plan("int8"), build_plan("fp32")
    assert int8["strongly_typed"] and not int8["autocast_fp16"]  # Q/DQ carries the INT8 precision
    assert fp32["strongly_typed"] and fp32["autocast_fp16"]  # FP16 via ModelOpt AutoCast (no FP16 flag in TRT 11)


@pytest.mark.slow
@pytest.mark.parametrize("zooms", [(), (0.95, 1.05)])
def test_prediction_views_export_to_onnx_and_openvino_at_any_batch(tmp_path, zooms):
    """The views live in the graph (constant resize matrices, batched MatMuls, the views' mean): every
    runtime must give the torch model's numbers, at batch 1 and at a larger batch."""
    from dataclasses import replace

    import onnxruntime as ort
    import openvino as ov
    import torch

    from export.onnx_export import export_onnx
    from models.inception import MODEL_CONFIGS, BoneAgeNet, BoneAgeOutputs

    torch.manual_seed(0)
    cfg = replace(MODEL_CONFIGS["w035-100"], flip_tta=True, net_size=112, tta_zooms=zooms)
    net = BoneAgeNet(cfg).eval()
    path = export_onnx(net, cfg, tmp_path / "tta.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops <= TENSORRT_OPS, ops - TENSORRT_OPS
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    core = ov.Core()
    for batch in (1, 3):
        x = torch.randn(batch, 1, 100, 100)
        with torch.no_grad():
            want = [t.numpy() for t in BoneAgeOutputs(net, cfg.age_mean, cfg.age_std)(x)]
        model = core.read_model(str(path))
        model.reshape({0: [batch, 1, 100, 100]})
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got_ov = compiled(x.numpy())
        got_ort = session.run(None, {"image": x.numpy()})
        for k in range(2):
            assert got_ort[k].shape == (batch,)
            np.testing.assert_allclose(got_ort[k], want[k], rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(got_ov[compiled.outputs[k]], want[k], rtol=1e-4, atol=1e-3)


def test_export_refuses_int8_models_with_the_wrong_activations():
    # Swapped --compressed / --compressed-openvino would put unsigned Q/DQ in the ONNX file (TensorRT rejects it)
    # and the signed model in OpenVINO (wrong on the CPUs measured): both are refused, naming the file.
    from export.cli import _check_activations
    # As edge-quantize records them (quantize.cli.run_int8); a model from before the flag is signed.
    signed = [{"method": "structured", "ratio": 0.2}, {"method": "int8-ptq", "signed_activations": True}]
    unsigned = [{"method": "int8-ptq", "signed_activations": False}]
    _check_activations("old.pt", [{"method": "int8-ptq"}], signed=True)
    _check_activations("a.pt", signed, signed=True)
    _check_activations("b.pt", unsigned, signed=False)
    with pytest.raises(SystemExit, match=r"b\.pt: its activations are not signed"):
        _check_activations("b.pt", unsigned, signed=True)
    with pytest.raises(SystemExit, match=r"a\.pt: its activations are not unsigned"):
        _check_activations("a.pt", signed, signed=False)


def test_a_relative_split_path_is_found_under_the_checkpoints_folders(tmp_path, monkeypatch):
    # edge-train records the split as it was given on its command line: relative to where it ran.
    from export.cli import resolve_split

    run = tmp_path / "repo" / "runs" / "x"
    run.mkdir(parents=True)
    (run / "best.pt").write_bytes(b"")
    (run / "split.json").write_text("{}")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert resolve_split(run / "best.pt", "runs/x/split.json") == str(run / "split.json")
    assert resolve_split(run / "best.pt", str(run / "split.json")) == str(run / "split.json")
    assert resolve_split(run / "best.pt", None) is None  # a checkpoint that records no split
    with pytest.raises(SystemExit, match=r"best\.pt: its split file 'runs/y/split\.json' is not found.*--split-file"):
        resolve_split(run / "best.pt", "runs/y/split.json")


def test_export_stops_when_the_recorded_split_is_nowhere(tmp_path):
    # Before: the bundle was written without split.json, and edge-verify could not find its test ids.
    from export.cli import main
    from models.checkpoint import save_weights
    from models.inception import create_model

    ckpt = tmp_path / "best.pt"
    save_weights(ckpt, create_model("w035-100"), {"split": "runs/gone/split.json"})
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "bundle"), "--no-int8"])
    assert "runs/gone/split.json" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "bundle" / "bundle.json").exists()
