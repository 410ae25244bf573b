"""Why ONNX Runtime INT8 is no faster than FP32 on an AVX2-only CPU, and whether a fused graph would be.

    NNCF_CI=1 python benchmarks/ort_int8_fusion_check.py --checkpoint models/checkpoints/default.pt \
        --data ../shared/data/rsna-boneage/train-100px --split models/splits/rsna-train-100px-seed0.json

Times, interleaved at batch 1, three ONNX files of the same network under ONNX Runtime and prints which ops
its optimiser left (QLinearConv = convolution run in INT8):
  shipped-style   the bundle's INT8 recipe (quantize.ptq), BatchNorm after each convolution
  bn-folded       BatchNorm folded into the convolutions before PTQ
  ort-rewritten   bn-folded, with the Q/DQ graph rewritten into the patterns ONNX Runtime fuses: ReLU -> signed
                  Q(zero point 0) becomes unsigned Q (scale / 2, same range), Q/DQ after max pools, int32 biases.
                  Not exact (unsigned quantization of the same range), and not TensorRT-compatible (unsigned).
plus the bundle-recipe FP32 export. An experiment, not the export path: nothing here ships.
"""
from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from export.onnx_export import export_onnx, fold_weight_quantizers
from models.checkpoint import load_model
from models.data import load_images, read_labels, read_split
from models.inception import BasicConv2d
from quantize.ptq import calibration_arrays, quantize_ptq


def fold_batchnorm(model: nn.Module) -> nn.Module:
    for block in model.modules():
        if isinstance(block, BasicConv2d) and isinstance(block.bn, nn.BatchNorm2d):
            block.conv, block.bn = fuse_conv_bn_eval(block.conv, block.bn), nn.Identity()
    return model


class Graph:
    """An ONNX graph with Constant nodes turned into initializers, for rewriting."""

    def __init__(self, path):
        self.model = onnx.load(str(path))
        g = self.model.graph
        for node in [n for n in g.node if n.op_type == "Constant"]:
            g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0]))
            g.node.remove(node)
        self.g = g

    def value(self, name):
        return next(numpy_helper.to_array(i) for i in self.g.initializer if i.name == name)

    def add(self, name, array):
        self.g.initializer.append(numpy_helper.from_array(array, name))
        return name

    def links(self):
        producer = {o: n for n in self.g.node for o in n.output}
        consumers = collections.defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                consumers[i].append(n)
        return producer, consumers

    def save(self, path):
        order, ready, todo = [], {i.name for i in self.g.input} | {i.name for i in self.g.initializer} | {""}, list(self.g.node)
        while todo:
            left = []
            for n in todo:
                if all(i in ready for i in n.input):
                    order.append(n)
                    ready.update(n.output)
                else:
                    left.append(n)
            assert len(left) < len(todo), "cycle"
            todo = left
        del self.g.node[:]
        self.g.node.extend(order)
        onnx.save(self.model, str(path))


def relu_to_unsigned(gr: Graph) -> int:
    """ReLU -> Q(int8, s, 0) -> DQs  ==>  Q(uint8, s/2, 0) -> DQs: ONNX Runtime then drops nothing in between."""
    _, consumers = gr.links()
    done = 0
    for relu in [n for n in gr.g.node if n.op_type == "Relu"]:
        users = consumers[relu.output[0]]
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            continue
        q = users[0]
        zp = gr.value(q.input[2])
        dqs = consumers[q.output[0]]
        if zp.dtype != np.int8 or zp.any() or any(d.op_type != "DequantizeLinear" for d in dqs):
            continue
        scale = gr.add(q.input[1] + "_u8", (gr.value(q.input[1]) / 2).astype(np.float32))
        zero = gr.add(q.input[2] + "_u8", np.zeros_like(zp, dtype=np.uint8))
        for n in [q, *dqs]:
            n.input[1], n.input[2] = scale, zero
        q.input[0] = relu.input[0]
        gr.g.node.remove(relu)
        done += 1
    return done


def requantize_after_maxpool(gr: Graph) -> int:
    """DQ -> MaxPool -> x  ==>  DQ -> MaxPool -> Q -> DQ (the same parameters: exact, max commutes with Q)."""
    producer, _ = gr.links()
    done = 0
    for pool in [n for n in gr.g.node if n.op_type == "MaxPool"]:
        dq = producer.get(pool.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        out = pool.output[0]
        pool.output[0] = out + "_fp"
        gr.g.node.extend([helper.make_node("QuantizeLinear", [out + "_fp", *dq.input[1:]], [out + "_q"]),
                          helper.make_node("DequantizeLinear", [out + "_q", *dq.input[1:]], [out])])
        done += 1
    return done


def int32_biases(gr: Graph) -> int:
    """A float bias after DQ inputs -> int32 DequantizeLinear with scale s_input * s_weight (ONNX Runtime's form)."""
    producer, _ = gr.links()
    floats = {i.name for i in gr.g.initializer}
    done = 0
    for conv in [n for n in gr.g.node if n.op_type == "Conv" and len(n.input) == 3 and n.input[2] in floats]:
        dx, dw = producer.get(conv.input[0]), producer.get(conv.input[1])
        if not (dx and dw and dx.op_type == dw.op_type == "DequantizeLinear"):
            continue
        name = conv.input[2]
        scale = (gr.value(dx.input[1]).astype(np.float32) * gr.value(dw.input[1])).astype(np.float32)
        q = np.rint(gr.value(name) / scale).astype(np.int32)
        inputs = [gr.add(name + "_q", q), gr.add(name + "_s", scale), gr.add(name + "_z", np.zeros_like(q))]
        gr.g.node.append(helper.make_node("DequantizeLinear", inputs, [name + "_dq"], axis=0))
        conv.input[2] = name + "_dq"
        done += 1
    return done


def session(path, threads: int) -> tuple[ort.InferenceSession, collections.Counter]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.optimized_model_filepath = str(path) + ".opt"
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s, collections.Counter(n.op_type for n in onnx.load(str(path) + ".opt").graph.node)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--calibration-size", type=int, default=300)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp())
    model, _ = load_model(args.checkpoint)
    cfg = model.cfg
    x, _ = calibration_arrays(args.data, cfg.input, args.calibration_size, args.split, progress=False)
    files = {"fp32": export_onnx(model, cfg, out / "fp32.onnx")}
    for name, net in (("shipped-style", model), ("bn-folded", fold_batchnorm(load_model(args.checkpoint)[0]))):
        files[name] = export_onnx(quantize_ptq(net, x), cfg, out / f"{name}.onnx")
        fold_weight_quantizers(files[name])
    gr = Graph(files["bn-folded"])
    counts = relu_to_unsigned(gr), requantize_after_maxpool(gr), int32_biases(gr)
    gr.save(out / "ort-rewritten.onnx")
    files["ort-rewritten"] = out / "ort-rewritten.onnx"
    print(f"rewritten: {counts[0]} ReLU+Q -> unsigned Q, {counts[1]} max pools requantized, {counts[2]} int32 biases")

    val = read_labels(args.data).subset(read_split(args.split)["val"][:64])
    xv = load_images(val.paths(), cfg.input, progress=False)
    sessions = {k: session(f, args.threads) for k, f in files.items()}
    ages = {k: s.run(None, {"image": xv})[0] for k, (s, _) in sessions.items()}
    times = collections.defaultdict(list)
    for _ in range(args.rounds):
        for k, (s, _) in sessions.items():
            t = time.perf_counter()
            s.run(None, {"image": xv[:1]})
            times[k].append(1000 * (time.perf_counter() - t))
    print(f"ONNX Runtime {ort.__version__}, {args.threads} threads, batch 1, {args.rounds} interleaved rounds; "
          f"|age - FP32| on 64 validation images")
    print("| graph | p50 ms | time / FP32 | QLinearConv | Conv/FusedConv (float) | mean / max abs months |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = np.median(times["fp32"])
    for k, (_, ops) in sessions.items():
        d = np.abs(ages[k] - ages["fp32"])
        print(f"| {k} | {np.median(times[k]):.1f} | {np.median(times[k]) / base:.2f}x | {ops['QLinearConv']} | "
              f"{ops['Conv'] + ops['FusedConv']} | {d.mean():.2f} / {d.max():.2f} |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NNCF_CI", "1")
    raise SystemExit(main())
