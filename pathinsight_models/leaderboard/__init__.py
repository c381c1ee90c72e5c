"""A Hub leaderboard for PathEnhanceDS: submissions, an evaluation worker and the tables a Space shows.

Public API: `submit`, `validate_model`, `run_pending`, `evaluate_request`, `EvalRequest`,
`results_record`, `list_requests`, `list_results`, `results_table`, `requests_table`, `filter_table`.
Imported lazily so `pathinsight submit` does not load torch.
"""

from __future__ import annotations

from pathenhanceds.lazy import lazy_exports

_EXPORTS = {
    "EvalRequest": ".requests",
    "results_record": ".requests",
    "requests_repo": ".requests",
    "results_repo": ".requests",
    "list_requests": ".store",
    "list_results": ".store",
    "submit": ".submission",
    "validate_model": ".submission",
    "run_pending": ".runner",
    "evaluate_request": ".runner",
    "results_table": ".table",
    "requests_table": ".table",
    "filter_table": ".table",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
