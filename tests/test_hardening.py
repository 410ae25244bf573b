"""Issue 23 (hardening) and the runtime-core risks of issue 25: each case built from a generated file or bundle,
each asserting the refusal (or the right answer) it names. docs/HARDENING.md lists what each one guards."""
from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, repo_env
from hardening_files import (EPS, dicom_declaring, dicom_rows_cut, dicom_with_transfer_syntax, jpeg_bytes,
                             jpeg_with_size, png_bytes, png_with_size)
from imaging_fixtures import dicom_pixels, phantom, write_dicom

from edge.backends import BackendUnavailable
from edge.bundle import BundleError, load_bundle, sha256_file
from edge.imaging import MAX_PIXELS, ImageError, decode_radiograph, expand_inputs, load_radiograph
from edge.reference import derive_int8_tolerances, tolerance
from edge.runtime import BackendFailure, BoneAgeModel, Failure, default_bundle_path

DEFAULT = default_bundle_path()


def _refused(path, *words):
    with pytest.raises(ImageError) as e:
        load_radiograph(path)
    msg = str(e.value)
    assert msg.startswith(str(path) + ": ") and "\n" not in msg and all(w in msg for w in words), msg
    return msg


# --- 1. one model shared by threads -------------------------------------------------------------------------

def _radiographs(tmp: Path, n: int = 8) -> list[Path]:
    files = []
    for k in range(n):
        a = phantom(160, age=20 + 25 * k, male=bool(k % 2))
        Image.fromarray(a).save(tmp / f"r{k}.png")
        files.append(tmp / f"r{k}.png")
    return files


@pytest.mark.parametrize("backend,precision", [("openvino", "fp32"), ("onnxruntime", "fp32"), ("openvino", "int8")])
def test_one_model_shared_by_threads_answers_like_serial(tmp_path, backend, precision):
    try:
        model = BoneAgeModel.load(backend=backend, precision=precision)
    except BackendUnavailable as e:
        pytest.skip(f"{backend} {precision} does not run here: {e}")
    files = _radiographs(tmp_path)
    serial = {f: model.predict(f).bone_age_months for f in files}
    assert len({round(v, 3) for v in serial.values()}) >= 4  # the images really differ: a mix-up would show
    got, errors = [], []

    def work(seed: int):
        rng = np.random.default_rng(seed)
        for _ in range(30):
            f = files[rng.integers(len(files))]
            try:
                got.append((f, model.predict(f).bone_age_months))
            except Exception as e:  # "Infer Request is busy" was one of these
                errors.append(repr(e))
        batch = model.predict_many(files, batch_size=3)  # batch shapes compiled while other threads run
        got.extend((f, r.bone_age_months) for f, r in zip(files, batch))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert len(got) == 4 * (30 + len(files))
    wrong = [(f.name, a, serial[f]) for f, a in got if abs(a - serial[f]) > 1e-3]
    assert not wrong, wrong[:5]


# --- 2. no telemetry, nothing written outside the user's output paths ---------------------------------------

def _offline(cmd: list[str]) -> tuple[list[str], str]:
    """cmd with no network: a new network namespace (unshare -n) where the kernel allows it, else proxies
    pointed at a closed port (which only stops clients that honour them); returns (prefix, how)."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n", *cmd], "unshare -n"
    return cmd, "proxies at 127.0.0.1:9"


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_edge_infer_writes_nothing_under_home_and_needs_no_network(tmp_path, backend):
    home = tmp_path / "home"
    home.mkdir()
    sample = next((DEFAULT / "samples").glob("*.png"))
    cmd, how = _offline([sys.executable, "-m", "edge.cli.infer", str(sample), "--backend", backend, "--no-progress"])
    env = repo_env() | {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config")}
    env |= {k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    for var in ("ORT_DISABLE_TELEMETRY", "CI"):  # the switch must come from edge itself
        env.pop(var, None)
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"({how}) {out.stderr}"
    assert backend in out.stdout
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == [], f"written under HOME ({how})"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # nor in the working folder


# --- 3. one pixel limit, from the header, for every format; the decoded size checked against it ---------------

def test_pixel_limit_from_the_header_for_every_format(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_with_size(png_bytes(), 9000, 9000))  # 81 MP: under Pillow's own limit, over ours
    _refused(big, "9000x9000", "before decoding")
    jpg = tmp_path / "big.jpg"
    jpg.write_bytes(jpeg_with_size(jpeg_bytes(), 9000, 9000))
    _refused(jpg, "9000x9000", "before decoding")
    _refused(dicom_declaring(tmp_path / "native.dcm", 40000, 40000), "40000x40000", "before decoding")
    frames = write_dicom(tmp_path / "frames.dcm", dicom_pixels())
    import pydicom
    ds = pydicom.dcmread(frames)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4000, 4000, 5  # 80 MP over five frames
    ds.save_as(frames)
    _refused(frames, "4000x4000x5 frames")
    assert Image.MAX_IMAGE_PIXELS != MAX_PIXELS  # nothing process-wide is changed to do it


def test_deflated_dicom_bomb_is_refused_with_bounded_memory(tmp_path):
    """283 KB on disk, 288 MB inflated, 144 MP declared: once read at 2.7 GB peak, answered 155 months. Peak memory
    is the child's VmHWM (ru_maxrss would carry the parent's peak across fork and exec)."""
    bomb = dicom_declaring(tmp_path / "bomb.dcm", 12000, 12000, deflated=True)
    assert bomb.stat().st_size < 1 << 20
    code = ("import resource, sys; from edge.imaging import load_radiograph, ImageError\n"
            "try: load_radiograph(sys.argv[1]); print('ANSWERED')\n"
            "except ImageError as e: print(e)\n"
            "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(bomb)], env=repo_env(), capture_output=True, text=True,
                         timeout=120)
    message, peak_mb = out.stdout.strip().splitlines()
    assert "inflates to more than" in message and "ANSWERED" not in message, out.stdout + out.stderr
    assert int(peak_mb) < 400, f"peak RSS {peak_mb} MB"


def test_headers_that_lie_about_the_size_are_refused(tmp_path):
    tall, short = tmp_path / "tall.png", tmp_path / "short.png"
    # `lit` has no zero pixel, so no row of it decodes blank; `dark_row` has a blank row 99.
    lit = np.clip(phantom(128).astype(np.int16) + 1, 1, 255).astype(np.uint8)
    dark_row = lit.copy()
    dark_row[99] = 0
    tall.write_bytes(png_with_size(png_bytes(lit), height=180))  # IHDR 128x180 over 128 rows, CRC fixed
    _refused(tall, "fewer rows")
    short.write_bytes(png_with_size(png_bytes(dark_row), height=100))
    _refused(short, "more rows")
    # Fewer rows declared than stored, last decoded row not blank: the stored top rows, real pixels (what libpng
    # and libspng give too); the second inflate that would see the extra data runs only for a blank last row.
    short.write_bytes(png_with_size(png_bytes(lit), height=100))
    assert np.array_equal(decode_radiograph(short), lit[:100])
    jpg = tmp_path / "tall.jpg"
    jpg.write_bytes(jpeg_with_size(jpeg_bytes(), height=30000))
    _refused(jpg, "JPEG data ends before", "128x30000")
    _refused(dicom_rows_cut(tmp_path / "rows.dcm"), "pixel data is", "48 rows")
    for progressive in (False, True):  # 8 rows too many: the first blocks of the last row still get garbage bits
        buf = io.BytesIO()
        Image.fromarray(phantom(256)).save(buf, "JPEG", quality=70, progressive=progressive)
        jpg.write_bytes(jpeg_with_size(buf.getvalue(), height=264))
        _refused(jpg, "JPEG data ends before", "256x264")
    corner = phantom(256)
    corner[-8:, -8:] = 128  # a real image's flat mid-grey corner (2 of the 12,411 train-299 JPEGs) is not missing data
    buf = io.BytesIO()
    Image.fromarray(corner).save(buf, "JPEG", quality=95)
    jpg.write_bytes(buf.getvalue())
    assert load_radiograph(jpg).shape == (256, 256)
    cut = tmp_path / "cut.jpg"  # a JPEG cut short: a truncated file, however Pillow's decoder ends it
    data = jpeg_bytes()
    cut.write_bytes(data[:len(data) * 2 // 3] + b"\xff\xd9")
    _refused(cut)
    for ok in (png_bytes(), jpeg_bytes()):  # the checks pass every honest file
        (tmp_path / "ok").write_bytes(ok)
        assert load_radiograph(tmp_path / "ok").shape == (128, 128)


def test_pillow_reads_only_the_formats_the_tool_reads(tmp_path, monkeypatch):
    """An EPS named .png: Pillow, unrestricted, identifies it as EPS and would hand it to Ghostscript on loading."""
    eps = tmp_path / "hand.png"
    eps.write_bytes(EPS)
    with Image.open(eps) as im:
        assert im.format == "EPS"  # the danger is real
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    marker = tmp_path / "gs-ran"
    for name in ("gs", "gswin32c", "gswin64c"):
        (fake_bin / name).write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
        (fake_bin / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    _refused(eps, "not a readable image")
    assert not marker.exists()


# --- 4. text from files is printable; DICOM messages in the tool's own words ---------------------------------

def test_text_from_a_file_reaches_the_user_without_control_characters(tmp_path):
    f = dicom_with_transfer_syntax(tmp_path / "escape.dcm", "1.2.840.10008.1.2.1\x1b]0;owned\x07\x1b[2J\nFAKE: ok")
    msg = _refused(f)
    assert not any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 for c in msg), repr(msg)
    weird = tmp_path / "name\x1b[31m\nline.png"
    weird.write_bytes(b"not an image")
    msg = str(pytest.raises(ImageError, load_radiograph, weird).value)
    assert "\x1b" not in msg and "\n" not in msg


def test_uncompressed_dicom_failures_do_not_blame_missing_jpeg_decoders(tmp_path):
    import pydicom
    f = write_dicom(tmp_path / "odd.dcm", dicom_pixels())
    ds = pydicom.dcmread(f)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 24, 24, 23  # native, a size no decoder takes
    ds.PixelData = bytes(int(ds.Rows) * int(ds.Columns) * 3)
    ds.save_as(f)
    msg = _refused(f, "Explicit VR Little Endian")
    assert "pylibjpeg" not in msg and "JPEG" not in msg


def test_a_text_file_named_dcm_gets_the_tools_own_words(tmp_path):
    f = tmp_path / "notes.dcm"
    f.write_text("patient called back, see chart\n")
    msg = _refused(f, "not a DICOM file", "DICM")
    assert "force=True" not in msg


# --- 5. path problems named as what they are; folder expansion safe against link loops ------------------------

def test_every_path_problem_is_named(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    _refused(fifo, "not a regular file", "FIFO")
    assert time.perf_counter() - t0 < 5  # never opened: a FIFO would block
    dangling = tmp_path / "gone.png"
    dangling.symlink_to(tmp_path / "deleted.png")
    _refused(dangling, "broken symbolic link")
    folder = tmp_path / "scans.png"
    folder.mkdir()
    _refused(folder, "is a folder")
    _refused(tmp_path / "absent.png", "no such file")
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    _refused(loop, "cannot open")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: permission denied cannot happen")
def test_permission_denied_is_named(tmp_path):
    f = tmp_path / "locked.png"
    f.write_bytes(png_bytes())
    f.chmod(0)
    _refused(f, "permission denied")


def test_folder_expansion_ends_on_symlink_loops_and_lists_each_file_once(tmp_path):
    root = tmp_path / "in"
    (root / "a" / "b").mkdir(parents=True)
    for k in range(30):
        (root / ("a" if k % 2 else "a/b") / f"{k}.png").write_bytes(b"x")
    (root / "a" / "b" / "up").symlink_to(root)  # a loop
    (root / "a" / "again").symlink_to(root / "a")  # a second path to the same folder
    (root / "a" / "twin.png").symlink_to(root / "a" / "1.png")  # a second name for one file
    t0 = time.perf_counter()
    for item in (root, f"{root}/**/*.png"):
        found = [f for f, why in expand_inputs([item]) if why is None]
        assert len(found) == 30 and len({os.path.realpath(f) for f in found}) == 30, found
    assert time.perf_counter() - t0 < 10


# --- 6. bundles: malformed, tampered, unchecked, or self-test-less are refused in one line ---------------------

def _copy_bundle(tmp: Path, edit=None) -> Path:
    """The default bundle in tmp: bundle.json and samples copied, model files linked (hashes still apply)."""
    out = tmp / "bundle"
    shutil.copytree(DEFAULT / "samples", out / "samples")
    (out / "openvino").mkdir()
    for f in DEFAULT.rglob("*"):
        if f.is_file() and f.suffix in (".onnx", ".xml", ".bin", ".data"):
            (out / f.relative_to(DEFAULT)).symlink_to(f)
    meta = json.loads((DEFAULT / "bundle.json").read_text())
    if edit:
        meta = edit(meta) or meta
    (out / "bundle.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return out


def _infer(bundle: Path, capsys, *extra) -> tuple[int, str]:
    from edge.cli.infer import main
    sample = next((DEFAULT / "samples").glob("*.png"))
    rc = main([str(sample), "--bundle", str(bundle), "--no-progress", *extra])
    err = capsys.readouterr().err
    return rc, err


def _drop_field(meta):
    del meta["artifacts"][0]["sha256"]


MALFORMED = {
    "artifact without a field": (_drop_field, "artifacts[0] needs 'sha256'"),
    "artifacts not a list": (lambda m: m.update(artifacts={"path": "model-fp32.onnx"}), "'artifacts' must be a JSON list"),
    "a JSON list": (lambda m: [m], "holds a JSON list"),
    "deep nesting": (lambda m: "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    "config.input wrong type": (lambda m: m["config"]["input"].update(height="299"), "config"),
    "config.input huge": (lambda m: m["config"]["input"].update(height=10 ** 6, width=10 ** 6), "config.input"),
    "path outside the bundle": (lambda m: m["artifacts"][0].update(path="../../model-fp32.onnx"), "inside the bundle"),
    "unlisted OpenVINO .bin": (lambda m: m.update(artifacts=[a for a in m["artifacts"] if not a["path"].endswith(".bin")]),
                               "not listed in bundle.json"),
    "no samples": (lambda m: m.update(samples=[]), "stores no sample outputs"),
    "a sample without its outputs": (lambda m: m["samples"][0].clear() or m["samples"][0].update(file="samples/x.png"),
                                     "samples lack stored"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_bundle_is_a_one_line_refusal_with_its_exit_code(tmp_path, capsys, case):
    edit, words = MALFORMED[case]
    bundle = _copy_bundle(tmp_path, edit)
    args = ("--precision", "int8", "--backend", "openvino") if "bin" in case else ()
    rc, err = _infer(bundle, capsys, *args)
    assert rc == 3, err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err, err


def _with_artifact(tmp_path: Path, rel: str, data: bytes) -> Path:
    bundle = _copy_bundle(tmp_path)
    (bundle / rel).unlink()
    (bundle / rel).write_bytes(data)
    meta = json.loads((bundle / "bundle.json").read_text())
    for a in meta["artifacts"]:
        if a["path"] == rel:
            a.update(sha256=sha256_file(bundle / rel), size=len(data))
    (bundle / "bundle.json").write_text(json.dumps(meta))
    return bundle


def test_garbage_model_with_a_matching_sha256_is_refused_in_one_line(tmp_path, capsys):
    bundle = _with_artifact(tmp_path, "model-fp32.onnx", os.urandom(4096))
    rc, err = _infer(bundle, capsys, "--precision", "fp32")
    assert rc == 4 and err.count("\n") == 1 and "cannot load model-fp32.onnx" in err, err


def _onnx_model(height: int, width: int) -> bytes:
    """A real ONNX model of another input size with the bundle's output names."""
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, height, width])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", k]) for n, k in
            (("bone_age_months", 1), ("p_male", 1), ("bone_age_months_by_sex", 2))]
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("Identity", ["m"], ["bone_age_months"]), helper.make_node("Sigmoid", ["m"], ["p_male"]),
             helper.make_node("Concat", ["m", "m"], ["bone_age_months_by_sex"], axis=1)]
    graph = helper.make_graph(nodes, "other", [x], outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def test_a_model_of_another_input_shape_is_refused(tmp_path, capsys):
    bundle = _with_artifact(tmp_path, "model-fp32.onnx", _onnx_model(64, 64))
    rc, err = _infer(bundle, capsys, "--precision", "fp32", "--backend", "onnxruntime")
    assert rc == 3 and "takes input 1x64x64" in err and err.count("\n") == 1, err


def test_openvino_load_errors_let_auto_fall_back(tmp_path):
    bundle = _with_artifact(tmp_path, "openvino/model-int8.xml", b"<net><broken")
    try:
        model = BoneAgeModel.load(bundle, precision="int8")
    except BackendUnavailable as e:  # ONNX Runtime INT8 refused by its own self-test on this CPU: still no crash
        assert "openvino cannot load model-int8.xml" in str(e)
        return
    assert model.backend_name == "onnxruntime"


def test_int8_self_test_bound_comes_from_the_gate_and_refuses_what_the_old_bound_let_through(tmp_path):
    meta = load_bundle(DEFAULT).meta
    if not meta.get("retention"):
        pytest.skip("the default bundle has no INT8 retention record")
    gate = {"onnxruntime": meta["retention"], "openvino": (meta.get("openvino_int8") or meta)["retention"]}
    derived = derive_int8_tolerances(meta)
    for backend, record in gate.items():
        assert derived[backend] == pytest.approx(record["agreement"]["p95_abs_months"] + 2.0, abs=0.01)
        assert 1.0 < tolerance(meta, backend, "int8")[0] < 8.0  # months, not tens of months
    assert tolerance({}, "onnxruntime", "int8")[0] <= 5.0  # no gate record: the default
    for backend in ("onnxruntime", "openvino"):
        try:
            BoneAgeModel.load(DEFAULT, backend=backend, precision="int8")
        except BackendUnavailable:
            continue  # this CPU computes that INT8 wrongly: the right bundle is refused, so nothing to compare
        # INT8 outputs 3 months beyond the bound on one sample (stored FP32 outputs moved: as a model or preprocessing
        # that drifted that far would be); the former 25-month bound accepted this.
        shift = tolerance(meta, backend, "int8")[0] + 3.0
        assert shift < 25.0

        def drift(m):
            for name in ("bone_age_months", "bone_age_months_by_sex"):
                v = m["samples"][0][name]
                m["samples"][0][name] = [x + shift for x in v] if isinstance(v, list) else v + shift

        drifted = _copy_bundle(tmp_path / backend, drift)
        with pytest.raises(BackendUnavailable, match="wrong outputs"):
            BoneAgeModel.load(drifted, backend=backend, precision="int8")


# --- 7. backend failures are the backend's, never the file's -------------------------------------------------

class _CompileFails:
    """The real ONNX Runtime backend, except that preparing a batch of more than one fails (as an OpenVINO
    compile out of memory does) and, when asked, running fails too."""

    def __init__(self, real, run_fails=False):
        self.real, self.run_fails, self.name, self.precision = real, run_fails, real.name, real.precision

    def prepare(self, n):
        if n > 1:
            raise RuntimeError("compile failed: out of memory")

    def run(self, x):
        if self.run_fails:
            raise RuntimeError("Infer Request is busy")
        return self.real.run(x)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_backend_failure_fails_its_batch_not_the_run_and_blames_no_file(tmp_path):
    model = BoneAgeModel.load(backend="onnxruntime", precision="fp32")
    files = _radiographs(tmp_path, 4)
    model.backend = _CompileFails(model.backend)
    results = model.predict_many(files, batch_size=4)
    assert all(isinstance(r, BackendFailure) and "compile failed" in r.error for r in results)
    assert model.predict(files[0]).bone_age_months > 0  # batch 1 still runs
    model.backend.run_fails = True
    with pytest.raises(BackendUnavailable, match="Infer Request is busy") as e:
        model.predict(files[0])
    assert not isinstance(e.value, ImageError)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    with pytest.raises(ImageError):  # a bad file is still the file's fault
        model.predict(bad)


def test_tensorrt_engine_cache_is_atomic_and_a_bad_cache_is_rebuilt(tmp_path):
    from edge.backends.tensorrt_backend import load_or_build
    path = tmp_path / "cache" / "gpu.engine"
    built = []

    def build():
        built.append(1)
        return b"ENGINE"

    def deserialize(data):
        return ("engine", data) if data == b"ENGINE" else None  # TensorRT returns None for bytes it cannot use

    assert load_or_build(path, build, deserialize) == ("engine", b"ENGINE") and len(built) == 1
    assert load_or_build(path, build, deserialize) and len(built) == 1  # cached
    path.write_bytes(b"half an engine")  # a damaged cache, or another TensorRT's
    assert load_or_build(path, build, deserialize) and len(built) == 2 and path.read_bytes() == b"ENGINE"
    assert sorted(p.name for p in path.parent.iterdir()) == ["gpu.engine"]  # no temporary left behind
    with pytest.raises(BackendUnavailable, match="does not deserialize"):
        load_or_build(tmp_path / "x.engine", lambda: b"garbage", deserialize)
    assert not (tmp_path / "x.engine").exists()
