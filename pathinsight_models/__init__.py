"""PathInsight models: model families, training, evaluation and publishing."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import pathinsight_models` does not import torch/transformers/trl.
    if name == "train":
        from pathinsight_models.training import train

        return train
    raise AttributeError(f"module 'pathinsight_models' has no attribute {name!r}")
