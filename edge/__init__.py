"""Bone age and sex from a hand radiograph, on a plain CPU. Runtime only: numpy, Pillow, backend SDKs."""
import os as _os
import sys as _sys

__version__ = "0.1.0"


def _no_telemetry() -> None:
    """Nothing over the network, nothing written outside the user's output paths: both runtimes' telemetry is off
    before either is imported (tests/test_hardening.py runs edge-infer with an empty HOME and no network)."""
    # ONNX Runtime 1.29+ (Linux, macOS): its documented opt-out, read once when it initialises: no uploader, events,
    # or device id (~/.cache/Microsoft/DeveloperTools/.onnxruntime). A value the user set is left as it is.
    _os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    # OpenVINO: `import openvino` imports its model converter, which starts openvino_telemetry (a DNS lookup of an
    # analytics host; ~/intel/openvino_ga_cid and ~/intel/stats written). Its documented opt-out (opt_in_out
    # --opt_out) writes a consent file under HOME, so instead the converter's own fallback for an absent
    # openvino-telemetry package is used (openvino/tools/ovc/telemetry_stub.py; NNCF falls back likewise).
    # Unless something in this process imported it already, the module is marked absent.
    _sys.modules.setdefault("openvino_telemetry", None)


_no_telemetry()


def __getattr__(name):
    # Lazy, so `import edge` stays light (no backend SDK is imported until a model is loaded).
    if name == "BoneAgeModel":
        from edge.runtime import BoneAgeModel
        return BoneAgeModel
    raise AttributeError(name)
