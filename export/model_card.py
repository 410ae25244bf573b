"""MODEL_CARD.md for a bundle, rendered from bundle.json (and, when given, edge-verify/edge-bench results)."""
from __future__ import annotations

from pathlib import Path

from edge.metrics import PAPER, format_table

INTENDED_USE = """\
A decision-support estimate for clinicians (radiologists, paediatric endocrinologists) reading a
left- or right-hand/wrist radiograph of a child: an automated bone age in months and the sex the network
infers from the image. It is not a diagnosis, not a certified medical device, and must not replace a
clinician's reading (Greulich-Pyle or TW3). Research and evaluation use only."""

LIMITS = """\
- Low input resolution: the network sees the radiograph squashed to {h}x{w} px (the only resolution at
  which the whole RSNA training set is available here). Fine detail of growth plates is lost; expect a
  larger error than full-resolution models (the paper used full-resolution images).
- No external validation: all numbers come from a held-out part of the RSNA 2017 *training* set (one
  population: Stanford, Colorado, UCLA); performance on other populations, scanners and positioning is
  unknown. Check it on your own labelled images before relying on it: `edge-verify --data FOLDER` evaluates
  every image the model was not trained or selected on, with the errors by age band and sex.
- Images unlike RSNA radiographs (other body parts, heavy post-processing, photographs of film) give
  meaningless numbers; the tool does not detect them.
- Sex output is what the network infers from the image, not the patient's recorded sex; use the recorded
  sex clinically. Given the recorded sex (`--sex F|M`, `predict(..., sex=)`), models with an age head per sex
  read the age against it (more accurate: see the tables) and flag an image that reads strongly as the other
  sex.
- A runtime can compute wrong numbers on some CPUs: OpenVINO 2026.4.1 ran the signed-activation INT8 model
  wrongly on the AMD EPYCs measured, with and without VNNI, so edge-export gives OpenVINO its own unsigned-activation
  model (bundle.json: openvino_int8; right on both in the checks made; a column far from FP32 in the tables above
  would be such a case).
  Every backend is therefore checked against the stored sample outputs when it loads and refused if it
  misses them; `edge-verify` shows which backends pass on a machine."""


def _resize_text(cfg: dict) -> str:
    sizes = cfg.get("member_net_sizes") or []
    if sizes:
        return (f"; the prediction is the mean of {len(sizes)} such networks, each with its own weights, which first "
                f"resize the input to {' and '.join(f'{n}x{n}' for n in sizes)} respectively (bilinear, inside the "
                "graph)")
    size = cfg.get("net_size")
    return f"; the network first resizes it to {size}x{size} (bilinear, inside the graph)" if size else ""


def _views_text(cfg: dict) -> str:
    zooms, mirror = cfg.get("tta_zooms") or [], cfg.get("flip_tta")
    n = (1 + len(zooms)) * (2 if mirror else 1)
    if n == 1:
        return ""
    what = " and ".join(x for x in ("its mirror image" if mirror else "",
                                    f"zooms {', '.join(map(str, zooms))} about the centre" if zooms else "") if x)
    return (f"; each prediction is the mean over {n} views of the image (the image itself, {what}"
            f"{', each mirrored' if mirror and zooms else ''}), inside the graph: {n}x the compute of one pass")


def render(meta: dict, verify: dict | None = None, bench: list | None = None) -> str:
    cfg, spec = meta["config"], meta["config"]["input"]
    m = meta.get("model", {})
    parts = [f"# Model card: {m.get('name', cfg['name'])} {m.get('version', '')}".rstrip(), "",
             "## Intended use", INTENDED_USE, "",
             "## Model",
             f"InceptionV3 (width x{cfg['width']}) + Squeeze-and-Excitation, two heads (bone age regression, "
             f"sex logit){', plus an age head per sex for when the sex is given' if cfg.get('sex_heads') else ''}, "
             f"heads design `{cfg['heads']}`. Input: {spec['channels']}x{spec['height']}x"
             f"{spec['width']}, resize `{spec['resize']}` with `{spec['interpolation']}`, normalise "
             f"`{spec['normalize']}`" + _resize_text(cfg) + _views_text(cfg) +
             ". Built from: Rayed, Amasya, Sezdi, J Imaging Inform Med 2025, "
             "doi 10.1007/s10278-025-01623-2 (architecture re-implemented from the abstract).", "",
             "## Data",
             f"{meta.get('training', {}).get('data', 'unknown')}. RSNA Pediatric Bone Age Challenge 2017 "
             "(Stanford, University of Colorado, UCLA; distributed by RSNA for research use; the RSNA terms "
             "apply to these weights). Split 7:2:1 (train/validation/test), seeded, stratified by sex and age "
             f"band: {meta.get('training', {}).get('counts', '')}.", ""]
    ref = meta.get("reference_metrics")
    if ref:
        parts += ["## Test-split metrics (FP32 reference, torch, bootstrap 95% CI)", "```",
                  format_table({"FP32": ref}), "```", ""]
    if verify:
        parts += ["## Every shipped precision (edge-verify on the test split)", "```",
                  format_table({k: v["metrics"] for k, v in verify["backends"].items()}, paper=True), "```", ""]
        if verify.get("sex_given"):
            parts += ["## Bone age given the patient's sex (edge-verify on the test split, true sex given)", "```",
                      format_table({k: v["metrics"] for k, v in verify["sex_given"].items()}, paper=True),
                      "```", ""]
    if meta.get("retention") or (meta.get("openvino_int8") or {}).get("retention"):
        parts += ["## Retention of INT8 against FP32 (validation split, at export)", "```",
                  _retention_text(meta), "```", ""]
    if bench:
        parts += ["## Latency (edge-bench, batch 1, this project's 2-core CPU)", "```",
                  "\n".join(f"{r['backend']:<12}{r['precision']:<6} p50 {r['p50_ms']:7.2f} ms  "
                            f"p95 {r['p95_ms']:7.2f} ms  {r['size_mb']:6.1f} MB" for r in bench), "```", ""]
    parts += ["Measured with `edge-verify --data ... --json` and `edge-bench --json` and written here by "
              "benchmarks/update_model_card.py (commands in the project README). The machine is shared and "
              "noisy: compare latency medians within one run only.", "",
              "## Paper's values (for comparison; full resolution, their own split)",
              ", ".join(f"{k} {v}" for k, v in PAPER.items()), "",
              "## Limits", LIMITS.format(h=spec["height"], w=spec["width"]), ""]
    return "\n".join(parts)


def _retention_text(meta: dict) -> str:
    """The INT8 model's gate row, and OpenVINO's own (unsigned-activation) INT8 model's where it has one."""
    from edge.retention import format_rows
    rows = {"int8, ONNX (signed)": meta["retention"]} if meta.get("retention") else {}
    if (meta.get("openvino_int8") or {}).get("retention"):
        rows["int8, OpenVINO (unsigned)"] = meta["openvino_int8"]["retention"]
    return format_rows(rows)


def write_model_card(bundle_dir, meta: dict, **results) -> Path:
    path = Path(bundle_dir) / "MODEL_CARD.md"
    path.write_text(render(meta, **results))
    return path
