"""Token-F1 metric module (see `token_f1.py`)."""
