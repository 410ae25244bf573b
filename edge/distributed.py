"""The same runtime over Ray Data: `edge-infer INPUTS --ray ADDRESS|local` (pip install "boneage-edge[cluster]").

Each Ray worker is an actor holding one loaded BoneAgeModel (map_batches with a callable class): the bundle is
read, its sha256 and bundled samples checked and the network compiled once per actor, then every batch of file
paths sent to it goes through the same BoneAgeModel.predict_many a single machine runs, so the rows (and the
per-file failures) are the same records, yielded here in input order.

What must reach the workers (docs/THROUGHPUT.md): this package on every node (the default bundle ships in it),
a --bundle directory at the same path on every node, and the input files at the paths given (shared storage).
Only paths travel through Ray, never pixels.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edge.bundle import load_bundle
from edge.runtime import Failure, Prediction, default_bundle_path

# Ray may report usage to its vendor and starts a dashboard by default: neither, ever (no network, no data out).
QUIET_RAY = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_USAGE_STATS_PROMPT_ENABLED": "0"}


class RayModel:
    """What edge-infer needs of a BoneAgeModel (bundle, backend_name, precision, predict_iter), on Ray workers.

    address: "local" starts a private single-machine cluster on 127.0.0.1 (its files in a temporary folder,
    removed at the end); anything else is handed to ray.init (e.g. "auto" on a cluster node, "HOST:6379").
    workers: actors, each with its own model; cpus_per_worker: CPUs Ray reserves for each (also the runtime's
    thread count unless `threads` is given)."""

    def __init__(self, address: str, bundle=None, backend: str = "auto", precision: str = "auto",
                 threads: int | None = None, workers: int = 1, cpus_per_worker: float = 1.0,
                 quality_check: bool = True):
        if workers < 1 or cpus_per_worker <= 0:
            raise ValueError(f"Ray needs at least 1 worker and some CPU each; got {workers} x {cpus_per_worker}")
        self.address, self.workers, self.cpus_per_worker = address, workers, cpus_per_worker
        self.bundle_dir = str(Path(bundle).resolve()) if bundle else None  # None: each worker's own default
        self.bundle = load_bundle(bundle if bundle else default_bundle_path())  # fails here, not on every worker
        self.backend_name, self.precision = f"Ray ({backend})", precision
        self.load_args = {"bundle": self.bundle_dir, "backend": backend, "precision": precision,
                          "threads": threads or max(1, int(cpus_per_worker)), "quality_check": quality_check}

    def predict_iter(self, sources, batch_size: int = 1, sex=None, workers: int | None = None):
        """Paths -> one Prediction or Failure each, in input order, as BoneAgeModel.predict_iter. workers: decode
        threads inside each actor (None: one per core it sees)."""
        files = [str(s) for s in sources]
        if any(isinstance(s, np.ndarray) for s in sources):
            raise ValueError("Ray runs read files on the workers: give paths, not arrays")
        sexes = list(sex) if isinstance(sex, (list, tuple)) else [sex] * len(files)
        if len(sexes) != len(files):
            raise ValueError(f"{len(sexes)} sexes for {len(files)} inputs")
        if not files:
            return
        ray = _import_ray(local=self.address == "local")
        with _connected(ray, self.address, self.workers * self.cpus_per_worker):
            rows = [{"index": k, "file": f, "sex": s or ""} for k, (f, s) in enumerate(zip(files, sexes))]
            # The actor's settings travel as class attributes: constructor arguments would sit in Ray's object
            # store, and its core warns on every run that an actor restart could then fail.
            predictor = type("Predictor", (_Predictor,), {"load_args": self.load_args, "batch_size": batch_size,
                                                          "decode_workers": workers})
            with warnings.catch_warnings():
                # max_restarts goes through map_batches' **ray_remote_args, deprecated (gone in Ray 2.64: the
                # cluster extra pins below that) with no named replacement yet.
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = ray.data.from_items(rows).map_batches(
                    # Several network batches per actor call, so its decode threads run ahead of its network.
                    predictor, batch_size=max(16, batch_size * 4), batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=self.workers), num_cpus=self.cpus_per_worker,
                    # A lost node's actor is restarted on a cluster (Ray's default); a local one is not, which
                    # also spares the user Ray's error-level notice that a restart could fail.
                    **({"max_restarts": 0} if self.address == "local" else {}))
            try:
                for row in ds.iter_rows():
                    yield _decode(row["result"])
            except ray.exceptions.RayError as e:
                raise ClusterError(f"Ray: {_cause(e)}") from None


class _Predictor:
    """One Ray actor: one loaded model, batches of paths in, one encoded result per path out. RayModel sets the
    class attributes below on a subclass made for each run."""

    load_args: dict = {}
    batch_size: int = 8
    decode_workers: int | None = None

    def __init__(self):
        from edge.runtime import BoneAgeModel

        self.model = BoneAgeModel.load(**self.load_args)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files, sexes = [str(f) for f in batch["file"]], [str(s) for s in batch["sex"]]
        results = self.model.predict_many(files, batch_size=self.batch_size, sex=sexes, workers=self.decode_workers)
        return {"index": batch["index"], "result": np.array([_encode(r) for r in results], dtype=object)}


def _encode(result: Prediction | Failure) -> str:
    return json.dumps({"kind": type(result).__name__, **dataclasses.asdict(result)})


def _decode(text: str) -> Prediction | Failure:
    """A worker's record back as the same class (Prediction, or Failure and its kinds, e.g. a rejected image)."""
    import edge.runtime

    fields = json.loads(text)
    kind = fields.pop("kind", "")
    cls = getattr(edge.runtime, kind, None)
    try:
        if not (isinstance(cls, type) and issubclass(cls, (Prediction, Failure))):
            raise TypeError(f"unknown result kind {kind!r}")
        return cls(**fields)
    except TypeError as e:
        raise ClusterError(f"a Ray worker runs another version of boneage-edge than this process ({e}): install "
                           "the same version on every node") from None


class ClusterError(ValueError):
    """The cluster cannot be used (not reachable, a worker failed, versions differ): one line for the user."""


def _import_ray(local: bool):
    for key, value in QUIET_RAY.items():
        os.environ.setdefault(key, value)
    if local:
        # Ray starts its workers 15 steps nicer than the driver so that its own daemons stay responsive; on a
        # local cluster the workers do all the work, and on a busy PC that starved them (a model load took 22 s
        # instead of 2.3 s here): they run at the driver's priority, as a single-process edge-infer would.
        os.environ.setdefault("RAY_worker_niceness", "0")
    if local and "RAY_AUTH_TOKEN" not in os.environ:
        # A local cluster's token lives in this process's environment (its workers inherit it) instead of
        # ~/.ray/auth_token, where Ray would write one. Ray reads it when imported: set before the import.
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise ClusterError(f"--ray needs Ray Data: pip install 'boneage-edge[cluster]' ({e})") from None
    return ray


@contextmanager
def _connected(ray, address: str, cpus: float):
    """Connected to the cluster for the block; a local one is started on 127.0.0.1 and removed afterwards."""
    if ray.is_initialized():  # a caller (a notebook, a test) already chose the cluster
        yield
        return
    temp = None
    try:
        if address == "local":
            temp = tempfile.mkdtemp(prefix="edge-ray-")  # Ray's session files, never under the user's home
            ray.init(num_cpus=max(1, int(np.ceil(cpus))), include_dashboard=False, _node_ip_address="127.0.0.1",
                     _temp_dir=temp, configure_logging=False, log_to_driver=False)
        else:
            ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        _remove(temp)
        raise ClusterError(f"--ray {address}: cannot start or reach the cluster ({_cause(e)})") from None
    # No INFO line per dataset, no notice that progress bars are off: edge-infer reports what went wrong itself.
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in input order, as on one machine
    context.enable_progress_bars = False  # edge-infer shows its own progress
    context.print_on_execution_start = False
    try:
        yield
    finally:
        ray.shutdown()
        _remove(temp)


def _remove(folder) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _cause(e: BaseException) -> str:
    """The first line that says what went wrong, without Ray's wrapping and tracebacks."""
    lines = [line.strip() for line in str(getattr(e, "cause", None) or e).splitlines() if line.strip()]
    plain = [line for line in lines if not line.startswith(("Traceback", "File ", "ray::", "^"))]
    return (plain or lines or [type(e).__name__])[-1][:300]
