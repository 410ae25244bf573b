"""Every console script pyproject installs works in the runtime install (`pip install .`: no torch, no extras):
its --help answers, and a command that needs an extra says in one line what to install (exit 2), no traceback.
The runtime install is emulated in a subprocess whose import system refuses every module of the extras, as a
missing package does (ModuleNotFoundError)."""
from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from conftest import REPO, repo_env

SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
RUNTIME = {"edge-infer", "edge-verify", "edge-bench", "edge-eval", "edge-serve"}  # --help needs no extra
# The extras' top-level modules (pyproject [project.optional-dependencies] train, serve, cluster, plot, dev).
ABSENT = ["torch", "torchvision", "nncf", "torchao", "torch_pruning", "onnx", "onnxscript", "scipy", "tqdm",
          "matplotlib", "fastapi", "uvicorn", "multipart", "python_multipart", "pynetdicom", "highdicom", "ray",
          "pyarrow", "selenium", "httpx", "sklearn", "statsmodels", "pingouin", "skimage"]
BLOCK = f"""
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Absent())
"""


def run_script(name: str, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """The console script `name` as its entry point is declared, with the extras' modules absent."""
    module, function = SCRIPTS[name].split(":")
    code = (f"{BLOCK}\nsys.argv = [{name!r}, *{list(args)!r}]\nfrom {module} import {function}\n"
            f"sys.exit({function}())")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=repo_env(), cwd=REPO)


def test_the_blocker_really_hides_torch():
    out = subprocess.run([sys.executable, "-c", BLOCK + "\nimport torch"], capture_output=True, text=True,
                         env=repo_env())
    assert out.returncode == 1 and "ModuleNotFoundError: No module named 'torch'" in out.stderr


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_console_script_answers_help_without_the_extras(name):
    out = run_script(name, "--help")
    assert "Traceback" not in out.stderr, out.stderr
    if name in RUNTIME:
        assert out.returncode == 0 and out.stdout.startswith("usage: "), out.stderr
    else:  # needs torch: one line naming the extra
        assert out.returncode == 2 and out.stdout == "", out.stdout
        assert out.stderr.count("\n") == 1 and f"{name}: error: needs torch" in out.stderr
        assert 'pip install ".[train]"' in out.stderr


def test_edge_eval_with_a_checkpoint_says_what_to_install(tmp_path):
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"any")
    (tmp_path / "data").mkdir()
    out = run_script("edge-eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "data"))
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("edge-eval: error: needs torch") and 'pip install ".[train]"' in out.stderr


def test_edge_serve_without_the_serve_extra_says_what_to_install():
    out = run_script("edge-serve", "--port", "0")
    assert out.returncode == 2 and "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert 'pip install ".[serve]"' in out.stderr


def test_a_missing_module_of_no_extra_is_not_hidden():
    from edge.cli.extras import missing_extra

    assert missing_extra(ModuleNotFoundError("x", name="edge.nothing"), "edge-x") is None
    assert "[cluster]" in missing_extra(ModuleNotFoundError("x", name="ray.data"), "edge-infer")
