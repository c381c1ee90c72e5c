"""ROUGE metric module (see `rouge.py`)."""
