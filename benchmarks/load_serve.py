"""Load on edge-serve: concurrent HTTP clients and concurrent DICOM associations against one server process,
every answer checked against edge-infer on the same file. Not a test: it measures (docs/SERVE.md).

  nice -n 10 python benchmarks/load_serve.py                      # 20 clients x 10 images, 4 associations x 10
  nice -n 10 python benchmarks/load_serve.py --images DIR --clients 20 --per-client 10 --associations 4

Images: the full-resolution RSNA originals ($BONEAGE_DATA/fullres/images, as a clinic would send them), else the
bundle's samples. The DICOM phase sends them as DX images built with pydicom (tests/dicom_fixtures.py), with the
patient's sex from labels.csv, so the node reads the sex from the file as a PACS would give it.
Reference: one `edge-infer --json --batch-size 1` run on the same PNG and DICOM files (batch 1 as the server
runs). HTTP answers must equal it field for field (but ms); each SR's bone age and P(male) must equal it within
the JSON's rounding (0.05 months, 0.0005).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pydicom
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from dicom_fixtures import radiograph_dataset, write  # noqa: E402

from edge.runtime import default_bundle_path  # noqa: E402
from edge.serve.sr import read_sr  # noqa: E402


def parse_args(argv=None):
    data = Path(os.environ.get("BONEAGE_DATA", REPO.parent / "shared" / "data" / "rsna-boneage")) / "fullres"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=data if data.is_dir() else default_bundle_path() / "samples",
                   help="folder of PNG radiographs (its images/ subfolder and labels.csv when it has them)")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--per-client", type=int, default=10, help="images each client / association sends")
    p.add_argument("--associations", type=int, default=4)
    p.add_argument("--serve-args", default="", help="extra edge-serve arguments, e.g. '--backend onnxruntime'")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    folder = args.images / "images" if (args.images / "images").is_dir() else args.images
    pngs = sorted(folder.glob("*.png"))[: args.per_client]
    sexes = _sexes(args.images / "labels.csv")
    with tempfile.TemporaryDirectory(prefix="load-serve-") as tmp:
        dicoms = [write(radiograph_dataset(p, "DX", patient_id=p.stem, sex=sexes.get(p.stem, "")),
                        Path(tmp) / f"{p.stem}.dcm") for p in pngs]
        print(f"[1/4] reference: edge-infer --json --batch-size 1 on {len(pngs)} PNG + {len(dicoms)} DICOM files",
              file=sys.stderr)
        want = _edge_infer([*pngs, *dicoms])
        sr_queue: queue.Queue = queue.Queue()
        receiver, receiver_port = _receiver(sr_queue)
        port, dicom_port = _free_port(), _free_port()
        print("[2/4] starting edge-serve", file=sys.stderr)
        server = _start(port, dicom_port, receiver_port, args.serve_args, Path(tmp) / "server.log")
        try:
            print(f"[3/4] HTTP: {args.clients} clients x {args.per_client} images", file=sys.stderr)
            http = _http_phase(f"http://127.0.0.1:{port}", pngs, want, args.clients, args.per_client)
            print(f"[4/4] DICOM: {args.associations} associations x {args.per_client} images", file=sys.stderr)
            dicom = _dicom_phase(dicom_port, dicoms, want, sr_queue, args.associations, args.per_client)
        finally:
            server.terminate()
            server.wait(timeout=30)
            receiver.shutdown()
    model = want[pngs[0].name]
    print(f"\nedge-serve under load: {model['model']} {model['model_version']}, {model['backend']} "
          f"{model['precision']}, images from {folder} ({len(pngs)} distinct), {os.cpu_count()} CPU cores\n")
    print("| path | concurrency x images | answers | wrong | errors | p50 ms | p95 ms | images/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, concurrency, r in (("HTTP POST /v1/predict", args.clients, http),
                                 ("DICOM C-STORE -> SR", args.associations, dicom)):
        lat = np.array(r["latency_ms"]) if r["latency_ms"] else np.array([np.nan])
        print(f"| {name} | {concurrency} x {args.per_client} | {r['answers']} | {r['wrong']} | {r['errors']} | "
              f"{np.percentile(lat, 50):.0f} | {np.percentile(lat, 95):.0f} | {r['answers'] / r['wall_s']:.1f} |")
    for r in (http, dicom):
        for line in r["problems"][:5]:
            print("  ", line)
    ok = not any(r["wrong"] or r["errors"] for r in (http, dicom))
    print("\nall answers equal to edge-infer, no error" if ok else "\nFAILED: see above")
    return 0 if ok else 1


def _sexes(labels: Path) -> dict[str, str]:
    if not labels.is_file():
        return {}
    with labels.open() as f:
        return {row["id"]: "M" if row["male"].strip().lower() == "true" else "F" for row in csv.DictReader(f)}


def _edge_infer(files: list[Path]) -> dict[str, dict]:
    out = subprocess.run([sys.executable, "-m", "edge.cli.infer", "--json", "--batch-size", "1", "--no-progress",
                          *map(str, files)], capture_output=True, text=True, cwd=REPO, env=_env())
    if out.returncode != 0:
        raise SystemExit(f"edge-infer failed: {out.stderr.strip()[-500:]}")
    return {Path(r["file"]).name: r for r in json.loads(out.stdout)}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _receiver(got: queue.Queue):
    """The stand-in PACS: collects the SRs the node sends."""
    def on_store(event):
        got.put(event.dataset)
        return 0x0000

    ae = AE(ae_title="LOADPACS")
    ae.add_supported_context(ComprehensiveSRStorage, ExplicitVRLittleEndian)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    return server, server.server_address[1]


def _start(port: int, dicom_port: int, receiver_port: int, extra: str, log: Path):
    cmd = [sys.executable, "-m", "edge.cli.serve", "--port", str(port), "--no-access-log",
           "--dicom-port", str(dicom_port), "--allow-ae", "LOADSCU",
           "--send-to", f"LOADPACS@127.0.0.1:{receiver_port}", *extra.split()]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"edge-serve exited: {log.read_text()[-1000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit("edge-serve did not start in 180 s")


def _http_phase(url: str, pngs: list[Path], want: dict, clients: int, per_client: int) -> dict:
    blobs = {p.name: p.read_bytes() for p in pngs}
    names = list(blobs)

    def client(c: int):
        rows = []
        with httpx.Client(base_url=url, timeout=300) as http:
            for k in range(per_client):
                name = names[(c + k) % len(names)]
                t0 = time.perf_counter()
                try:
                    r = http.post("/v1/predict", files=[("files", (name, blobs[name], "image/png"))])
                    got = r.json()["results"][0] if r.status_code == 200 else {"error": f"HTTP {r.status_code}"}
                except Exception as e:  # counted, never raised: the run reports every failure
                    got = {"error": f"{type(e).__name__}: {e}"}
                rows.append((name, got, (time.perf_counter() - t0) * 1000))
        return rows

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        rows = [row for rs in pool.map(client, range(clients)) for row in rs]
    wall = time.perf_counter() - t0
    result = {"answers": 0, "wrong": 0, "errors": 0, "latency_ms": [], "wall_s": wall, "problems": []}
    for name, got, ms in rows:
        if "error" in got:
            result["errors"] += 1
            result["problems"].append(f"HTTP {name}: {got['error']}")
            continue
        result["answers"] += 1
        result["latency_ms"].append(ms)
        diff = {k for k in want[name] if k not in ("ms", "file") and got.get(k) != want[name][k]}
        if diff:
            result["wrong"] += 1
            result["problems"].append(f"HTTP {name}: differs from edge-infer in {sorted(diff)}")
    return result


def _dicom_phase(port: int, dicoms: list[Path], want: dict, srs: queue.Queue, associations: int,
                 per_client: int) -> dict:
    sources = [pydicom.dcmread(p) for p in dicoms]
    sent: dict[str, str] = {}  # SOP Instance UID stored -> file name
    lock = threading.Lock()

    def association(a: int):
        rows = []
        ae = AE(ae_title="LOADSCU")
        ae.add_requested_context(sources[0].SOPClassUID, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="BONEAGE")
        if not assoc.is_established:
            return [("association", "not established", 0.0)] * per_client
        try:
            for k in range(per_client):
                ds, path = sources[(a + k) % len(sources)], dicoms[(a + k) % len(sources)]
                ds = ds.copy()
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # one SR each
                with lock:
                    sent[ds.SOPInstanceUID] = path.name
                t0 = time.perf_counter()
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                rows.append((path.name, "ok" if code == 0 else f"status {code}", (time.perf_counter() - t0) * 1000))
        finally:
            assoc.release()
        return rows

    t0 = time.perf_counter()
    with ThreadPoolExecutor(associations) as pool:
        rows = [row for rs in pool.map(association, range(associations)) for row in rs]
    expected = sum(1 for _, state, _ in rows if state == "ok")
    received = []
    deadline = time.monotonic() + 120
    while len(received) < expected and time.monotonic() < deadline:
        try:
            received.append(srs.get(timeout=1))
        except queue.Empty:
            pass
    wall = time.perf_counter() - t0  # until the last SR arrived
    result = {"answers": 0, "wrong": 0, "errors": 0, "latency_ms": [], "wall_s": wall, "problems": []}
    for name, state, ms in rows:
        if state != "ok":
            result["errors"] += 1
            result["problems"].append(f"DICOM {name}: {state}")
        else:
            result["latency_ms"].append(ms)
    missing = expected - len(received)
    if missing:
        result["errors"] += missing
        result["problems"].append(f"DICOM: {missing} SR(s) never arrived")
    for sr in received:
        fields = read_sr(sr)
        name = sent.get(fields.get("source"), "?")
        ref = want.get(name, {})
        result["answers"] += 1
        age, p_male = fields.get("Bone age", (None,))[0], fields.get("Probability of male sex", (None,))[0]
        if (age is None or abs(age - ref.get("bone_age_months", np.inf)) > 0.05 + 0.005
                or abs(p_male - ref.get("p_male", np.inf)) > 0.0005 + 0.00005):
            result["wrong"] += 1
            result["problems"].append(f"DICOM {name}: SR bone age {age}, P(male) {p_male}; edge-infer "
                                      f"{ref.get('bone_age_months')}, {ref.get('p_male')}")
    return result


if __name__ == "__main__":
    sys.exit(main())
