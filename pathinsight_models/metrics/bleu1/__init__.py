"""BLEU-1 metric module (see `bleu1.py`)."""
