"""Image scoring (BiomedCLIP P(H&E), image-caption similarity) and the filters built on the scores.

Typical use in a build::

    table = read_scores("scores.parquet", expected_model=DEFAULT_MODEL)
    kept = select_he(textbook_plans, table).kept            # the paper's P(H&E) > 0.98
    top = select_top_k(openpath_plans, table, k=20_000).kept  # the paper's OpenPath top-K
"""

from .scorers import (
    DEFAULT_MODEL,
    PAPER_LABELS,
    PAPER_PROMPTS,
    PROMPT_TEMPLATE,
    HEScorer,
    OpenClipEncoder,
    Scorer,
    ScoreRun,
    SimilarityScorer,
    load_open_clip,
    record_text,
    score_sources,
)
from .scores_file import (
    HE_THRESHOLD,
    OPENPATH_TOP_K,
    ScoreMeta,
    ScoreRow,
    ScoreTable,
    Selection,
    load_scores,
    read_scores,
    select_he,
    select_top_k,
    write_scores,
)

__all__ = [
    "DEFAULT_MODEL", "HE_THRESHOLD", "OPENPATH_TOP_K", "PAPER_LABELS", "PAPER_PROMPTS", "PROMPT_TEMPLATE",
    "HEScorer", "OpenClipEncoder", "ScoreMeta", "ScoreRow", "ScoreRun", "ScoreTable", "Scorer", "Selection",
    "SimilarityScorer", "load_open_clip", "load_scores", "read_scores", "record_text", "score_sources",
    "select_he", "select_top_k", "write_scores",
]
