"""edge.pipeline: decoding ahead of the network in a bounded pool of threads, results in input order; and the
runtime and edge-infer through it (real ONNX Runtime on the tiny bundle, real files)."""
from __future__ import annotations

import csv
import threading
import time

import numpy as np
import pytest

from edge.pipeline import OrderedMap


def test_ordered_map_keeps_input_order_when_later_items_finish_first():
    delays = [0.03, 0.0, 0.02, 0.0, 0.01, 0.0] * 3

    def slow_identity(k):
        time.sleep(delays[k])
        return k

    assert list(OrderedMap(slow_identity, range(len(delays)), workers=3, ahead=5)) == list(range(len(delays)))


def test_ordered_map_runs_in_worker_threads_and_never_more_than_ahead_items_ahead():
    started, names = [], set()

    def record(k):
        started.append(k)
        names.add(threading.current_thread().name)
        return k

    consumed = 0
    for k in OrderedMap(record, range(200), workers=2, ahead=6):
        time.sleep(0.001)
        consumed += 1
        # Submitted ahead of the caller: the one it holds plus at most `ahead` more, whatever the input's length.
        assert len(started) <= consumed + 6
    assert consumed == 200 and sorted(started) == list(range(200))
    assert names and all(n.startswith("edge-prepare") for n in names)


def test_ordered_map_with_no_workers_runs_lazily_in_the_calling_thread():
    seen = []
    results = OrderedMap(lambda k: seen.append(threading.current_thread()) or k, range(5), workers=0, ahead=4)
    assert seen == []  # nothing runs before the caller asks
    assert next(results) == 0 and seen == [threading.current_thread()]


def test_ordered_map_stopped_early_starts_nothing_more():
    calls = []

    def record(k):
        calls.append(k)
        time.sleep(0.002)
        return k

    results = OrderedMap(record, range(1000), workers=2, ahead=4)
    assert next(results) == 0
    results.close()
    n = len(calls)
    time.sleep(0.05)
    assert n == len(calls) <= 1 + 4 + 2  # what was already submitted, nothing after close


def test_eager_map_starts_before_the_first_next_and_close_stops_it():
    started, calls = threading.Event(), []

    def record(k):
        calls.append(k)
        started.set()
        time.sleep(0.002)
        return k

    results = OrderedMap(record, range(1000), workers=2, ahead=4, eager=True)
    assert started.wait(5)  # no next() yet: edge-infer decodes while the model compiles
    results.close()
    n = len(calls)
    time.sleep(0.05)
    assert n == len(calls) <= 4
    assert list(OrderedMap(lambda k: k, range(7), workers=2, ahead=3, eager=True)) == list(range(7))


def test_ordered_map_reraises_an_exception_from_fn():
    def boom(k):
        if k == 3:
            raise RuntimeError("boom")
        return k

    with pytest.raises(RuntimeError, match="boom"):
        list(OrderedMap(boom, range(10), workers=2, ahead=4))


@pytest.fixture
def mixed_inputs(tiny_images, tmp_path):
    """Good images with bad files in between (and a bad one first and last): failures must keep their place."""
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"not a png")
    missing = tmp_path / "missing.png"
    good = [str(p) for p in tiny_images]
    return [str(bad), *good[:5], str(missing), *good[5:], str(bad)]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_predict_iter_with_workers_equals_the_serial_run(tiny_bundle, mixed_inputs, backend):
    from edge.runtime import BoneAgeModel, Failure

    model = BoneAgeModel.load(tiny_bundle, backend=backend, precision="fp32")
    serial = model.predict_many(mixed_inputs, batch_size=4, workers=0)
    for workers in (1, 3):
        threaded = list(model.predict_iter(mixed_inputs, batch_size=4, workers=workers))
        assert [r.file for r in threaded] == mixed_inputs
        for a, b in zip(serial, threaded):
            assert type(a) is type(b)
            if isinstance(a, Failure):
                assert a.error == b.error
            else:
                assert (a.bone_age_months, a.p_male) == (b.bone_age_months, b.p_male)
    assert sum(isinstance(r, Failure) for r in serial) == 3


def test_predict_iter_takes_inputs_prepared_before_the_model_loaded(tiny_bundle, mixed_inputs):
    from edge.bundle import load_bundle
    from edge.runtime import BoneAgeModel, Failure, InputPreparer

    bundle = load_bundle(tiny_bundle)
    prepared = InputPreparer.for_bundle(bundle).start(mixed_inputs, workers=2, ahead=32)
    model = BoneAgeModel.load(bundle, backend="onnxruntime", precision="fp32")
    early = list(model.predict_iter(mixed_inputs, batch_size=2, prepared=prepared))
    serial = model.predict_many(mixed_inputs, workers=0)
    assert [r.file for r in early] == [r.file for r in serial] == mixed_inputs
    for a, b in zip(early, serial):
        assert type(a) is type(b)
        assert (a.error if isinstance(a, Failure) else a.bone_age_months) == \
            (b.error if isinstance(b, Failure) else b.bone_age_months)


def test_predict_iter_yields_before_reading_every_input(tiny_bundle, tiny_images):
    """Streaming with bounded memory: the first result arrives while most of a long input list is unread."""
    from edge.runtime import BoneAgeModel

    model = BoneAgeModel.load(tiny_bundle, backend="onnxruntime", precision="fp32")
    reads = []
    original = model.prepare_input
    model.prepare_input = lambda item: reads.append(item[0]) or original(item)
    sources = [str(tiny_images[k % len(tiny_images)]) for k in range(200)]
    results = model.predict_iter(sources, batch_size=4, workers=2)
    next(results)
    assert len(reads) <= 4 + (4 + 2) + 1  # the first batch, the read-ahead window, one being consumed
    results.close()


def test_predict_many_progress_counts_every_input(tiny_bundle, mixed_inputs):
    from edge.runtime import BoneAgeModel

    model = BoneAgeModel.load(tiny_bundle, backend="onnxruntime", precision="fp32")
    counts = []
    model.predict_many(mixed_inputs, batch_size=4, progress=counts.append)
    assert counts == sorted(counts) and counts[-1] == len(mixed_inputs)


def test_edge_infer_workers_flag_gives_the_same_rows(tiny_bundle, mixed_inputs, tmp_path):
    from edge.cli.infer import main

    rows = {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}.csv"
        code = main([*mixed_inputs, "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--precision", "fp32",
                     "--workers", workers, "--batch-size", "3", "--csv", str(out), "--no-progress"])
        assert code == 1  # three inputs fail, the rest are read
        with open(out, newline="") as f:
            rows[workers] = [{k: v for k, v in r.items() if k != "ms"} for r in csv.DictReader(f)]
    assert rows["0"] == rows["2"] and len(rows["0"]) == len(mixed_inputs)


def test_edge_infer_refuses_negative_workers(capsys):
    from edge.cli.infer import main

    with pytest.raises(SystemExit):
        main(["x.png", "--workers", "-1"])
    assert "--workers must be 0 or more" in capsys.readouterr().err


def test_full_resolution_radiographs_through_workers_equal_the_serial_run(rsna_root):
    """The 5-megapixel originals (decoded by several threads at once) give what one thread gives."""
    from edge.runtime import BoneAgeModel

    images = sorted((rsna_root / "fullres" / "images").glob("*.png"))[:6]
    model = BoneAgeModel.load(backend="onnxruntime", precision="fp32")
    serial = model.predict_many([str(p) for p in images], batch_size=4, workers=0)
    threaded = model.predict_many([str(p) for p in images], batch_size=4, workers=2)
    np.testing.assert_array_equal([r.bone_age_months for r in serial], [r.bone_age_months for r in threaded])
    np.testing.assert_array_equal([r.p_male for r in serial], [r.p_male for r in threaded])


def test_openvino_compile_cache_only_when_asked_and_same_results(tiny_bundle, tiny_images, tmp_path, monkeypatch):
    """BONEAGE_OPENVINO_CACHE: compiled models kept in that folder for the next process; unset, nothing written."""
    from edge.backends.openvino_backend import CACHE_ENV
    from edge.runtime import BoneAgeModel

    cache = tmp_path / "ov-cache"
    images = [str(p) for p in tiny_images[:4]]
    monkeypatch.delenv(CACHE_ENV, raising=False)
    plain = BoneAgeModel.load(tiny_bundle, backend="openvino", precision="fp32").predict_many(images)
    assert not cache.exists()
    monkeypatch.setenv(CACHE_ENV, str(cache))
    for _ in range(2):  # the first load fills the cache, the second reads it
        cached = BoneAgeModel.load(tiny_bundle, backend="openvino", precision="fp32").predict_many(images)
        assert [r.bone_age_months for r in cached] == [r.bone_age_months for r in plain]
        assert any(cache.iterdir())
