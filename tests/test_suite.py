"""The test suite's own rules: a real-data test skips only where the data may be absent, and fails in CI."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import repo_env

REAL_DATA_TEST = "tests/test_data.py::test_committed_split_reproduces_from_rsna_labels"


def _run_without_data(tmp_path, **env):
    e = {k: v for k, v in repo_env().items() if k not in ("CI", "BONEAGE_DATA_REQUIRED")}
    e |= {"BONEAGE_DATA": str(tmp_path / "absent"), **env}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", REAL_DATA_TEST],
                          capture_output=True, text=True, env=e, timeout=300)


def test_missing_rsna_data_skips_by_default(tmp_path):
    out = _run_without_data(tmp_path, BONEAGE_DATA_REQUIRED="0")
    assert out.returncode == 0 and "1 skipped" in out.stdout, out.stdout


@pytest.mark.slow
def test_missing_rsna_data_fails_where_it_is_required(tmp_path):
    for env in ({"BONEAGE_DATA_REQUIRED": "1"}, {"CI": "true"}):
        out = _run_without_data(tmp_path, **env)
        assert out.returncode == 1 and "1 error" in out.stdout, (env, out.stdout)
        assert "RSNA bone-age data not found" in out.stdout and "not a skip" in out.stdout
