"""Bone age and sex from a hand radiograph, on a plain CPU. Runtime only: numpy, Pillow, backend SDKs."""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so `import edge` stays light (no backend SDK is imported until a model is loaded).
    if name == "BoneAgeModel":
        from edge.runtime import BoneAgeModel
        return BoneAgeModel
    raise AttributeError(name)
