"""A damaged or oversized DICOM never breaks the reading of its patient's age and sex: the tags are read through
edge.imaging.read_dicom_header (bounded, one ImageError for any damage) and the image decoder reports the file."""
import sys
from pathlib import Path

from edge.clinical.patient import Patient, from_dicom

sys.path.insert(0, str(Path(__file__).parent))
from hardening_files import dicom_declaring  # noqa: E402


def _damaged_deflate(path: Path) -> Path:
    """A deflated DICOM whose compressed body starts with a reserved deflate block type (zlib.error in pydicom)."""
    from edge.imaging import _dicom_meta_end

    dicom_declaring(path, 64, 64, deflated=True)
    raw = bytearray(path.read_bytes())
    with open(path, "rb") as f:
        start = _dicom_meta_end(f)
    raw[start:start + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))
    return path


def test_a_damaged_deflated_dicom_gives_no_patient_details_and_no_traceback(tmp_path):
    assert from_dicom(_damaged_deflate(tmp_path / "bad.dcm")) == Patient()


def test_a_deflated_dicom_bomb_is_not_inflated_to_read_its_tags(tmp_path):
    # 12000 x 12000 x 2 bytes inflate to 288 MB: refused from its header by the bounded reader, not read whole.
    assert from_dicom(dicom_declaring(tmp_path / "bomb.dcm", 12000, 12000, deflated=True)) == Patient()


def test_edge_infer_reports_the_damaged_dicom_in_one_line(tmp_path):
    import subprocess

    from conftest import repo_env

    bad = _damaged_deflate(tmp_path / "bad.dcm")
    out = subprocess.run([sys.executable, "-m", "edge.cli.infer", str(bad), "--no-progress"], env=repo_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert "bad.dcm" in out.stdout + out.stderr
