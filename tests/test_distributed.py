"""edge-infer --ray: the same runtime over Ray Data on a real local Ray cluster (127.0.0.1, one worker, one CPU;
and two workers, in input order), giving the rows and per-file failures the single-machine run gives. Skipped where Ray is not installed
(pip install ".[cluster]")."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from conftest import repo_env


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "ms"} for row in csv.DictReader(f)]  # ms: timing, not a result


@pytest.fixture
def mixed_inputs(tiny_images, tmp_path):
    bad = tmp_path / "truncated.png"
    bad.write_bytes(tiny_images[0].read_bytes()[:200])
    return [str(tiny_images[0]), str(bad), *(str(p) for p in tiny_images[1:5]), str(tmp_path / "missing.png")]


def test_ray_run_writes_the_rows_of_the_single_machine_run(tiny_bundle, mixed_inputs, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install '.[cluster]' to test edge-infer --ray")
    home = tmp_path / "home"
    home.mkdir()
    env = repo_env() | {"HOME": str(home)}  # what Ray would write under the user's home shows up here
    common = [*mixed_inputs, "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--precision", "fp32",
              "--batch-size", "2", "--no-progress"]
    single, on_ray = tmp_path / "single.csv", tmp_path / "ray.csv"
    subprocess.run([sys.executable, "-m", "edge.cli.infer", *common, "--csv", str(single)], env=env,
                   capture_output=True, text=True, timeout=300)
    done = subprocess.run([sys.executable, "-m", "edge.cli.infer", *common, "--csv", str(on_ray), "--parquet",
                           str(tmp_path / "ray.parquet"), "--ray", "local",
                           "--ray-workers", "1", "--ray-cpus", "1"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 1, done.stderr  # two inputs fail, as on one machine
    assert "Traceback" not in done.stderr, done.stderr
    want, got = _rows(single), _rows(on_ray)
    assert len(want) == len(mixed_inputs) and got == want
    assert [r["file"] for r in got] == mixed_inputs
    assert sum(bool(r["error"]) for r in got) == 2
    import pyarrow.parquet as pq  # Ray brings pyarrow
    typed = pq.read_table(tmp_path / "ray.parquet").to_pylist()
    assert [r["file"] for r in typed] == mixed_inputs
    assert [r["bone_age_months"] for r in typed] == [float(r["bone_age_months"]) if r["bone_age_months"] else None
                                                     for r in want]
    assert list(home.iterdir()) == []  # no ~/.ray/auth_token, no usage-stats files


def test_ray_results_decode_to_the_runtime_records():
    from edge.distributed import _decode, _encode
    from edge.runtime import Failure, Prediction

    from edge.runtime import BackendFailure

    p = Prediction("a.png", 120.5, 0.9, "male", "openvino", "int8", 3.2, given_sex="male")
    f = Failure("b.png", "no such file")
    b = BackendFailure("c.png", "openvino failed: out of memory")
    for result in (p, f, b):
        back = _decode(_encode(result))
        assert back == result and type(back) is type(result)


def test_a_worker_of_another_version_is_a_one_line_error():
    from edge.distributed import ClusterError, _decode

    text = '{"kind": "Prediction", "file": "a.png", "bone_age_months": 1.0, "a_field_from_the_future": 1}'
    with pytest.raises(ClusterError, match="another version of boneage-edge"):
        _decode(text)
    with pytest.raises(ClusterError, match="unknown result kind 'Exploit'"):
        _decode('{"kind": "Exploit", "file": "a.png"}')


def test_ray_model_refuses_arrays_and_bad_sizes(tiny_bundle):
    import numpy as np

    from edge.distributed import RayModel

    with pytest.raises(ValueError, match="at least 1 worker"):
        RayModel("local", tiny_bundle, workers=0)
    model = RayModel("local", tiny_bundle)
    with pytest.raises(ValueError, match="give paths, not arrays"):
        list(model.predict_iter([np.zeros((90, 90), np.uint8)]))


@pytest.mark.slow
def test_two_ray_workers_keep_the_input_order(tiny_bundle, tiny_images, tmp_path):
    """Two actors (each its own model) answer 48 inputs, shuffled and with failures among them: every result
    comes back in input order and equal to the single-machine run's, and both actors were started."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install '.[cluster]' to test edge-infer --ray")
    import json
    import random

    inputs = [str(p) for p in tiny_images] * 2 + [str(tmp_path / f"missing-{k}.png") for k in range(24)]
    random.Random(0).shuffle(inputs)
    pids = tmp_path / "pids"
    pids.mkdir()
    code = f"""
import json, os, sys
import edge.distributed as d
from edge.runtime import BoneAgeModel

class Recorded(d._Predictor):  # each actor says it started: two workers must really run
    def __init__(self):
        super().__init__()
        open(os.path.join({str(pids)!r}, str(os.getpid())), "w").close()

d._Predictor = Recorded
inputs = {inputs!r}
ray = d.RayModel("local", {str(tiny_bundle)!r}, backend="onnxruntime", precision="fp32", workers=2)
one = BoneAgeModel.load({str(tiny_bundle)!r}, backend="onnxruntime", precision="fp32")
got = [d._encode(r) for r in ray.predict_iter(inputs, batch_size=1)]
want = [d._encode(r) for r in one.predict_many(inputs, batch_size=1)]
print(json.dumps({{"got": got, "want": want}}))
"""
    home = tmp_path / "home"
    home.mkdir()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                         env=repo_env() | {"HOME": str(home)})
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    got = [json.loads(x) for x in r["got"]]
    want = [json.loads(x) for x in r["want"]]
    assert [g["file"] for g in got] == inputs
    strip = lambda rows: [{k: v for k, v in x.items() if k != "ms"} for x in rows]  # noqa: E731  timing
    assert strip(got) == strip(want)
    assert len(list(pids.iterdir())) == 2
