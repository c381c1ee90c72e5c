"""Classification metric module (see `classification.py`)."""
