"""One self-contained HTML page per radiograph, fit to print: the estimate in clinical context.

Everything is inline (PNG as data: URIs, the chart as SVG, CSS in the page): the file can be mailed,
archived or printed without the tool, and nothing is fetched from the network when it is opened.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from edge.clinical import reference

RESEARCH_USE = ("For research use only. Not a medical device: not cleared or approved for diagnosis or treatment. "
                "A qualified reader must review the radiograph and this estimate.")


# The patient and study a DICOM names, in the order the report lists them: (label, DICOM keyword).
IDENTITY = (("Name", "PatientName"), ("Patient ID", "PatientID"), ("Birth date", "PatientBirthDate"),
            ("Study date", "StudyDate"), ("Accession number", "AccessionNumber"))


def identity(path) -> dict[str, str]:
    """{label: text} of IDENTITY from a DICOM file's header ("" where a tag is absent); {} for a file that is
    not DICOM or cannot be read. For the report's page only: these are never logged."""
    from edge.imaging import ImageError, read_dicom_header, printable

    try:
        ds = read_dicom_header(path)
    except (ImageError, OSError):
        return {}
    out = {}
    for label, keyword in IDENTITY:
        value = ds.get(keyword, "") or ""
        text = _person(value) if keyword == "PatientName" else _date(str(value)) if "Date" in keyword else str(value)
        out[label] = printable(text.strip(), limit=120)
    return out


def _person(name) -> str:
    """DICOM PN 'Doe^Jane^M' -> 'Doe, Jane M' (family name first, as a clinic files it)."""
    parts = [p.strip() for p in str(name).split("=")[0].split("^")]
    family, rest = parts[0], " ".join(p for p in parts[1:3] if p)
    return f"{family}, {rest}" if family and rest else family or rest


def _date(text: str) -> str:
    """DICOM DA '20140102' -> '2014-01-02'; anything else as written."""
    text = text.strip()
    return f"{text[:4]}-{text[4:6]}-{text[6:]}" if re.fullmatch(r"\d{8}", text) else text


def plain_source(source: str) -> str:
    """Where a value came from, in a reader's words: 'DICOM PatientSex' -> 'from the DICOM (PatientSex)',
    '--age' -> 'given by the user'; text already in plain words ('given on the form') as it is."""
    if source.startswith("--"):
        return "given by the user"
    if source.startswith("DICOM "):
        return f"from the DICOM ({source[6:]})"
    m = re.fullmatch(r"(.+) line (\d+)", source)
    if m:
        return f"from the patients list {m.group(1)}, line {m.group(2)}"
    return source


def plain_note(note: str) -> str:
    """A note without the commands and document paths meant for the operator ('(run python -m ...)', 'see
    docs/...'): the reader of a report cannot act on them."""
    note = re.sub(r"\s*\((?:run |see )[^)]*\)", "", note)
    return re.sub(r";?\s*see docs/[^\s)]+", "", note)


def years_months(months: float | None) -> str:
    if months is None:
        return "-"
    y, m = divmod(int(round(months)), 12)
    return f"{y} y {m} m"


def png_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def picture(image: np.ndarray, longest: int) -> Image.Image:
    """A radiograph in [0, 1] as an 8-bit picture whose longer side is `longest` pixels."""
    scale = longest / max(image.shape)
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)


def chart_svg(pred, sex: str, width: int = 340, height: int = 260) -> str:
    """Bone age against chronological age (years): the identity line, the reference's +-2 SD band for this
    sex, and this patient (the interval as a bar). Without a chronological age the bone age is a line."""
    pad, top = 40, 12
    max_y = 20.0
    sx = lambda a: pad + a / max_y * (width - pad - 10)  # noqa: E731  (years -> px)
    sy = lambda a: height - pad - a / max_y * (height - pad - top)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="bone age against chronological age">',
             '<rect width="100%" height="100%" fill="white"/>']
    for t in range(0, 21, 2):  # grid and ticks
        parts.append(f'<line x1="{sx(t):.1f}" y1="{sy(0):.1f}" x2="{sx(t):.1f}" y2="{sy(max_y):.1f}" stroke="#eee"/>')
        parts.append(f'<line x1="{sx(0):.1f}" y1="{sy(t):.1f}" x2="{sx(max_y):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{sx(t):.1f}" y="{height - pad + 14}" font-size="10" text-anchor="middle">{t}</text>')
        parts.append(f'<text x="{pad - 6}" y="{sy(t) + 3:.1f}" font-size="10" text-anchor="end">{t}</text>')
    if sex in reference.SD_MONTHS:
        b = reference.band(sex)
        pts = [(a, hi) for a, _, hi in b] + [(a, max(lo, 0)) for a, lo, _ in reversed(b)]
        poly = " ".join(f"{sx(a / 12):.1f},{sy(v / 12):.1f}" for a, v in pts)
        parts.append(f'<polygon points="{poly}" fill="#cfe3f7" stroke="#8ab4de"/>')
    parts.append(f'<line x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(max_y):.1f}" y2="{sy(max_y):.1f}" '
                 'stroke="#555" stroke-dasharray="4 3"/>')
    ba, lo, hi = pred.bone_age_months / 12, pred.interval_low_months, pred.interval_high_months
    if pred.chronological_age_months is not None:
        ca = pred.chronological_age_months / 12
        if lo is not None:
            parts.append(f'<line x1="{sx(ca):.1f}" y1="{sy(min(lo / 12, max_y)):.1f}" x2="{sx(ca):.1f}" '
                         f'y2="{sy(min(hi / 12, max_y)):.1f}" stroke="#c0392b" stroke-width="3"/>')
        parts.append(f'<circle cx="{sx(ca):.1f}" cy="{sy(min(ba, max_y)):.1f}" r="5" fill="#c0392b"/>')
    else:
        parts.append(f'<line x1="{sx(0):.1f}" y1="{sy(ba):.1f}" x2="{sx(max_y):.1f}" y2="{sy(ba):.1f}" '
                     'stroke="#c0392b" stroke-dasharray="6 3"/>')
    parts.append(f'<text x="{(pad + width) / 2:.1f}" y="{height - 6}" font-size="11" text-anchor="middle">'
                 'chronological age (years)</text>')
    parts.append(f'<text x="12" y="{(height - pad) / 2:.1f}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(height - pad) / 2:.1f})">bone age (years)</text></svg>')
    return "".join(parts)


def _row(label: str, value: str) -> str:
    return f"<tr><th>{html.escape(label)}</th><td>{value}</td></tr>"


def _fmt(v, spec: str, unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def model_lines(bundle) -> list[str]:
    """The model's name, version and measured accuracy, as bundle.json records them."""
    meta = bundle.meta
    model = meta.get("model", {})
    out = [f"{model.get('name', '?')} version {model.get('version', '?')}"]
    ref = meta.get("reference_metrics")
    if ref:
        ci = ref.get("ci", {}).get("mae")
        out.append(f"measured on {ref.get('n', '?')} held-out RSNA images ({ref.get('split', 'test')} split, FP32, "
                   f"sex-blind): mean absolute error {ref['mae']:.1f} months"
                   + (f" (95% CI {ci[0]:.1f}-{ci[1]:.1f})" if ci else "")
                   + f"; sex accuracy {ref.get('accuracy', float('nan')):.1%}")
    test = (meta.get("clinical") or {}).get("test")
    if test:
        for variant, c in test.get("intervals", {}).items():
            out.append(f"{c['level']:.0%} interval ({variant.replace('_', ' ')}): coverage {c['coverage']:.1%} on "
                       f"{c['n']} test images, mean width {c['mean_width']:.1f} months")
    return out


def patient_rows(patient: dict | None) -> str:
    """The patient table: IDENTITY as the DICOM gives it, or a line saying the image file names no patient."""
    if not patient:
        return _row("Patient", "not named in the image file (not a DICOM): write the name on the printout")
    cells = [f"<th>{html.escape(label)}</th><td>{html.escape(patient.get(label) or 'not in the DICOM')}</td>"
             for label, _ in IDENTITY]
    return "".join(f"<tr>{''.join(cells[k:k + 3])}</tr>" for k in range(0, len(cells), 3))  # 3 a line: one page


def render(pred, bundle, image: np.ndarray | None = None, heat: Image.Image | None = None,
           patient: dict | None = None, made: dt.datetime | None = None) -> str:
    """One page for one Prediction (with its clinical fields). image: the radiograph in [0, 1]; heat: its
    overlay (edge.clinical.heatmap.overlay); patient: identity() of the DICOM it came from; made: the
    report's date (now)."""
    sex = pred.given_sex or ("" if pred.sex_uncertain else pred.sex)
    interval = ("" if pred.interval_low_months is None else
                f" ({pred.interval_level:.0%} interval {pred.interval_low_months:.0f}-{pred.interval_high_months:.0f}"
                " months)")
    seen = f"{pred.sex} (P(male) {pred.p_male:.2f}"
    if pred.p_male_calibrated is not None:
        seen += f", calibrated {pred.p_male_calibrated:.2f}" + ("; uncertain" if pred.sex_uncertain else "")
    seen += ")"
    rows = [
        _row("Bone age", f"<b>{pred.bone_age_months:.0f} months ({years_months(pred.bone_age_months)})</b>"
                         f"{html.escape(interval)}"),
        _row("Chronological age", "not given" if pred.chronological_age_months is None else
             f"{pred.chronological_age_months:.1f} months ({years_months(pred.chronological_age_months)}), "
             f"{html.escape(plain_source(pred.age_source))}"),
        _row("Bone age - chronological age", _fmt(pred.delay_months, "+.1f", " months")),
        _row("SDS (Greulich-Pyle)", _fmt(pred.sds, "+.2f")),
        _row("Category", html.escape(pred.category or "-")),
        _row("Sex given", html.escape(pred.given_sex or "not given")
             + (f", {html.escape(plain_source(pred.given_sex_source))}" if pred.given_sex_source else "")),
        _row("Sex as the image reads", html.escape(seen)),
    ]
    notes = [plain_note(n) for n in (pred.warning, pred.context_note) if n]
    if pred.corrections:
        notes.append(f"input corrected before the estimate: {pred.corrections}")
    pictures = []
    if image is not None:
        gray = picture(image, 360)
        pictures.append(f'<figure><img src="{png_uri(gray)}" alt="radiograph"><figcaption>radiograph'
                        '</figcaption></figure>')
    if heat is not None:
        pictures.append(f'<figure><img src="{png_uri(heat)}" alt="occlusion heatmap"><figcaption>what drove the '
                        'estimate (occlusion: brighter = the estimate changed more when that area was hidden)'
                        '</figcaption></figure>')
    name = Path(pred.file).name  # the file's name only: a folder path can name a patient or a clinic's share
    model = "".join(f"<li>{html.escape(m)}</li>" for m in [*model_lines(bundle), f"run on {pred.backend} "
                                                           f"{pred.precision}"])
    made = (made or dt.datetime.now()).strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>Bone age estimate: {html.escape(name)}</title>
<style>
@page {{ size: A4; margin: 12mm; }}
body {{ font-family: "DejaVu Sans", Arial, sans-serif; font-size: 11pt; color: #111; max-width: 190mm; margin: 0 auto; }}
@media print {{ body {{ font-size: 10pt; }} }}
h1 {{ font-size: 15pt; margin: 0 0 2mm; }} h2 {{ font-size: 11pt; margin: 4mm 0 1mm; }}
.banner {{ border: 2px solid #c0392b; padding: 2mm 3mm; font-weight: bold; margin: 2mm 0 3mm; }}
.pics {{ display: flex; gap: 4mm; }} figure {{ margin: 0; }} figure img {{ height: 72mm; display: block; }}
figcaption {{ font-size: 8pt; max-width: 62mm; color: #444; }}
.cols {{ display: flex; gap: 5mm; align-items: flex-start; }}
table {{ border-collapse: collapse; }} th {{ text-align: left; font-weight: normal; color: #444; padding: 1mm 3mm 1mm 0; }}
td {{ padding: 1mm 0; }} table.patient {{ margin-bottom: 3mm; }} table.patient td {{ padding-right: 6mm; font-weight: bold; }} .notes li {{ color: #8a4b00; }} .small {{ font-size: 8.5pt; color: #333; }}
</style></head><body>
<h1>Bone age estimate</h1>
<div class="small">Image file: {html.escape(name)} &middot; report made {made}</div>
<div class="banner">{html.escape(RESEARCH_USE)}</div>
<table class="patient">{patient_rows(patient)}</table>
<div class="pics">{''.join(pictures)}</div>
<div class="cols"><div><h2>Result</h2><table>{''.join(rows)}</table></div>
<div><h2>Bone age against age (Greulich-Pyle &plusmn;2 SD, {html.escape(sex or 'sex unknown')})</h2>
{chart_svg(pred, sex)}</div></div>
{'<h2>Warnings</h2><ul class="notes">' + ''.join(f'<li>{html.escape(n)}</li>' for n in notes) + '</ul>' if notes else ''}
<h2>Model</h2><ul class="small">{model}</ul>
<p class="small">Reference: {html.escape(plain_note(reference.CITATION))}. SDS = (bone age - chronological age) / SD of the
reference at that age and sex; delayed below -2 SD, advanced above +2 SD. The interval is a split-conformal
prediction interval fitted on the model's validation images; it holds on average over images like RSNA's,
not for every child.</p>
</body></html>
"""


def write_report(pred, bundle, out_dir, image=None, heat=None, name: str | None = None) -> Path:
    """DIR/<name>.report.html for a Prediction of a file on disk (its DICOM header names the patient)."""
    out = Path(out_dir) / f"{name or Path(pred.file).stem}.report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(pred, bundle, image, heat, patient=identity(pred.file)), encoding="utf-8")
    return out
