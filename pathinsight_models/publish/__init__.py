"""Publishing to the Hugging Face Hub (`pathinsight push ...`)."""

from .dataset import DatasetFolder, find_local_paths, push_dataset, validate_dataset_folder

__all__ = ["DatasetFolder", "find_local_paths", "push_dataset", "validate_dataset_folder"]
