"""The accuracy campaign: one long training run, started or resumed first whenever work on the project begins.

    python -m models.campaign start     # start or resume the current leg in the background (one core, nice 10)
    python -m models.campaign status    # where its curve stands: epochs, validation MAE, newest checkpoint's age
    python -m models.campaign record    # its log and curve into benchmarks/results/training/, its best weights
                                        # (compact) into the leg's fallback_init for a machine without the folder

The legs (what is trained, from what) are in models/campaign.json; `current` names the one to run. Each leg trains
in RUN_DIR/<leg> (RUN_DIR: $BONEAGE_CAMPAIGN_DIR, else ~/.cache/boneage-edge/campaign), outside the work tree so a
fresh checkout keeps it. edge-train saves its whole state there every --checkpoint-minutes, mid-epoch included, and
resumes from it exactly; a machine without the folder starts the leg again from the best weights `record` kept
in the repository (fallback_init), else from its --init-from weights.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LEGS = REPO / "models" / "campaign.json"
RESULTS = REPO / "benchmarks" / "results" / "training"


def run_dir() -> Path:
    return Path(os.environ.get("BONEAGE_CAMPAIGN_DIR", Path.home() / ".cache" / "boneage-edge" / "campaign"))


def data_root() -> Path:
    return Path(os.environ.get("BONEAGE_DATA", REPO.parent / "shared" / "data" / "rsna-boneage"))


def current_leg() -> tuple[str, dict]:
    legs = json.loads(LEGS.read_text())
    return legs["current"], legs["legs"][legs["current"]]


def train_command(name: str, leg: dict) -> list[str]:
    """The leg's edge-train command: its own arguments, then the campaign's fixed ones (data, run folder, one core)."""
    out = run_dir() / name
    args = list(leg["args"])
    init = args.index("--init-from") + 1 if "--init-from" in args else None
    if init and args[init].startswith("campaign:"):  # another leg's weights, in its run folder
        args[init] = str(run_dir() / args[init].removeprefix("campaign:"))
        if not Path(args[init]).exists():
            raise SystemExit(f"campaign {name}: starts from {args[init]}, which this machine does not have (that leg "
                             "ran elsewhere); run that leg first, or set another --init-from in models/campaign.json")
    fallback = REPO / leg.get("fallback_init", "")
    if not (out / "last.pt").exists() and leg.get("fallback_init") and fallback.exists() and "--init-from" in args:
        # A machine without the run folder: start again from the leg's best so far, kept in the repository
        # (compact), rather than from the leg's first weights; a warm restart of the schedule, not an exact resume.
        args[args.index("--init-from") + 1] = str(fallback)
    if leg.get("widen") and not (out / "last.pt").exists() and args[args.index("--init-from") + 1] != str(fallback):
        args[args.index("--init-from") + 1] = str(widened(out, REPO / args[args.index("--init-from") + 1], leg["widen"]))
    return [sys.executable, "-m", "models.train", "--data", str(data_root() / leg["data"]), "--out", str(out),
            *args, "--threads", "1", "--checkpoint-minutes", str(leg.get("checkpoint_minutes", 10)),
            "--no-progress"]


def widened(out: Path, src: Path, width: float) -> Path:
    """A leg that starts a wider network: its --init-from weights widened function-preserving (models.widen), once,
    into the run folder (too big to keep in the repository)."""
    dst = out / f"init-width-{width}.pt"
    if not dst.exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "models.widen", str(src), str(dst), "--width", str(width)], cwd=REPO,
                       check=True)
    return dst


def running(out: Path) -> list[int]:
    """Pids of edge-train processes writing to `out` (read from /proc; empty where there is none)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        trains = b"models.train" in args or any(a.endswith(b"edge-train") for a in args)
        if trains and str(out).encode() in args:
            pids.append(int(cmdline.parent.name))
    return pids


def start() -> int:
    name, leg = current_leg()
    out = run_dir() / name
    if pids := running(out):
        print(f"campaign {name}: already training (pid {', '.join(map(str, pids))}); log {out / 'train.log'}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["nice", "-n", "10", *train_command(name, leg)]
    with open(out / "stdout.log", "a") as log:
        # A new session, so the run outlives the shell that started it.
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    what = "resuming" if (out / "last.pt").exists() else "starting"
    print(f"campaign {name}: {what} (pid {proc.pid}); log {out / 'train.log'}\n  {' '.join(cmd)}")
    return 0


def epoch_rows(log: Path) -> list[dict]:
    """The JSON epoch rows of a train.log (other lines are progress text)."""
    rows = []
    for line in log.read_text().splitlines():
        line = line.split("  *best*")[0].strip()
        if line.startswith("{") and '"epoch"' in line:
            rows.append(json.loads(line))
    return rows


def status() -> int:
    name, leg = current_leg()
    out = run_dir() / name
    print(f"campaign {name}: {leg.get('about', '')}\n  run folder {out}")
    if not (out / "train.log").exists():
        print("  not started here: python -m models.campaign start")
        return 0
    for r in epoch_rows(out / "train.log"):
        given = f" / {r['val_mae_sex_given']:.2f} given the sex" if "val_mae_sex_given" in r else ""
        print(f"  epoch {r['epoch']:>3}: validation MAE {r['val_mae']:.2f} sex-blind{given}, "
              f"sex accuracy {r['val_accuracy']:.3f}, lr {r['lr']:.2e}, {r['minutes']:.0f} min")
    if (out / "last.pt").exists():
        age = (time.time() - (out / "last.pt").stat().st_mtime) / 60
        last = [line for line in (out / "train.log").read_text().splitlines() if line.startswith("checkpoint:")]
        print(f"  newest checkpoint {age:.0f} min old" + (f" ({last[-1]})" if last else ""))
    pids = running(out)
    print(f"  {'training (pid ' + ', '.join(map(str, pids)) + ')' if pids else 'not running'}")
    return 0


def record() -> int:
    """Copy the leg's log into the repository and draw its curve (validation only; the test split is never shown)."""
    name, leg = current_leg()
    log = run_dir() / name / "train.log"
    if not log.exists():
        raise SystemExit(f"campaign {name}: no {log} here")
    RESULTS.mkdir(parents=True, exist_ok=True)
    dst = RESULTS / f"campaign-{name}.log"
    dst.write_text(log.read_text())
    sys.path.insert(0, str(REPO / "benchmarks"))
    from plot_learning_curve import main as plot

    if leg.get("fallback_init") and (log.parent / "best.pt").exists():
        from models.checkpoint import load_model, save_compact

        model, ckpt = load_model(log.parent / "best.pt")
        save_compact(REPO / leg["fallback_init"], model, {"epoch": ckpt.get("epoch"), "val_metrics": ckpt.get("val_metrics"),
                                                          "split": ckpt.get("split"), "campaign_leg": name})
        print(f"wrote {leg['fallback_init']} (epoch {ckpt.get('epoch')}, compact)")
    start = [str(v) for v in leg.get("start_val_mae", [])]
    return plot([str(dst), "--labels", name, "--out", str(dst.with_suffix(".png"))] + (["--start", *start] if start else []))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.campaign", description=__doc__.splitlines()[0])
    p.add_argument("verb", choices=["start", "status", "record"])
    return {"start": start, "status": status, "record": record}[p.parse_args(argv).verb]()


if __name__ == "__main__":
    sys.exit(main())
