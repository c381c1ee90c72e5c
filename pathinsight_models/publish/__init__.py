"""Publishing to the Hugging Face Hub (`pathinsight push ...`): datasets (`dataset.py`), models
(`model.py`, `model_card.py`) and eval results (`eval_results.py`); shared Hub checks live in
`pathinsight_models.hub`."""

from pathinsight_models.hub import find_local_paths

from .dataset import DatasetFolder, push_dataset, validate_dataset_folder

__all__ = ["DatasetFolder", "find_local_paths", "push_dataset", "validate_dataset_folder"]
