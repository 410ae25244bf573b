from models.layers.se import SqueezeExcite

__all__ = ["SqueezeExcite"]
