"""PathInsight models: model families, training, evaluation and publishing."""

__version__ = "0.1.0"
