"""PathVQA metric module (see `pathvqa.py`)."""
