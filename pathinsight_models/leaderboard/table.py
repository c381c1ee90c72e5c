"""Leaderboard tables (pandas) from the results and requests repos, and the filters the Space offers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from .requests import result_key
from .store import list_requests, list_results

INFO_COLUMNS = ["Model", "Base model", "Type", "Method", "Precision", "Revision"]
AVERAGE = "Average"
REQUEST_COLUMNS = ["Model", "Revision", "Precision", "Type", "Base model", "Status", "Submitted", "Error"]


def task_columns() -> dict[str, list[str]]:
    """Evaluation task -> its headline column labels, in benchmark order."""
    from pathinsight_models.publish.eval_results import benchmark_tasks

    out: dict[str, list[str]] = {}
    for bt in benchmark_tasks():
        out.setdefault(bt.task, []).append(bt.label)
    return out


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    from pathinsight_models.publish.eval_results import benchmark_tasks

    config, results = record["config"], record["results"]
    row: dict[str, Any] = {
        "Model": config["model_name"],
        "Base model": config.get("base_model") or "",
        "Type": config.get("weight_type") or "",
        "Method": config.get("method") or "",
        "Precision": config.get("precision") or "",
        "Revision": (config.get("model_sha") or "")[:12],
    }
    for bt in benchmark_tasks():
        value = (results.get(bt.task) or {}).get(result_key(bt.task, bt.mode, bt.metric))
        row[bt.label] = round(100 * value, 2) if isinstance(value, int | float) else None
    row["_evaluated_at"] = config.get("evaluated_at") or ""
    return row


def with_average(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Add `Average` (mean of the given score columns, over the scores a model has) and sort by it."""
    out = df.copy()
    present = [c for c in columns if c in out.columns]
    out[AVERAGE] = out[present].mean(axis=1, skipna=True).round(2) if present else float("nan")
    return out.sort_values(AVERAGE, ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def records_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (model, revision, precision), the latest evaluation winning; scores in percent."""
    labels = [label for labels in task_columns().values() for label in labels]
    rows = [_row(r) for r in records]
    df = pd.DataFrame(rows, columns=[*INFO_COLUMNS, *labels, "_evaluated_at"])
    if not df.empty:
        df = df.sort_values("_evaluated_at").drop_duplicates(["Model", "Revision", "Precision"], keep="last")
    df = df.drop(columns="_evaluated_at")
    # Scores stay numeric (NaN = not evaluated) so the table sorts them as numbers.
    df[labels] = df[labels].astype("float64")
    df = with_average(df, labels)
    return df[[*INFO_COLUMNS, AVERAGE, *labels]]


def results_table(leaderboard: str, *, api: Any = None, token: str | None = None) -> pd.DataFrame:
    """The leaderboard table read from `<leaderboard>-results` through `huggingface_hub`."""
    return records_table(list_results(leaderboard, api=api, token=token))


def requests_table(leaderboard: str, *, api: Any = None, token: str | None = None) -> pd.DataFrame:
    """The submission queue as a DataFrame (one row per request, newest state)."""
    rows = [
        {"Model": r.model, "Revision": r.revision[:12], "Precision": r.precision, "Type": r.weight_type,
         "Base model": r.base_model or "", "Status": r.status, "Submitted": r.submitted_time, "Error": r.error or ""}
        for r in list_requests(leaderboard, api=api, token=token)
    ]
    return pd.DataFrame(rows, columns=REQUEST_COLUMNS).iloc[::-1].reset_index(drop=True)  # newest first


def filter_table(
    df: pd.DataFrame,
    *,
    tasks: Sequence[str] | None = None,
    base_models: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
    query: str = "",
    drop_empty: bool = False,
) -> pd.DataFrame:
    """Rows and columns the Space shows: task columns of `tasks` (Average over them), rows matching
    the base models / methods / weight types (empty selection = all) and the model-name `query`;
    `drop_empty` hides score columns no shown model has."""
    columns = task_columns()
    chosen = [t for t in (tasks if tasks is not None else columns) if t in columns]
    labels = [label for t in chosen for label in columns[t]]
    out = df
    for column, wanted in (("Base model", base_models), ("Method", methods), ("Type", types)):
        if wanted:
            out = out[out[column].isin(list(wanted))]
    if query.strip():
        out = out[out["Model"].str.contains(query.strip(), case=False, regex=False)]
    out = with_average(out.drop(columns=[AVERAGE], errors="ignore"), labels)
    if drop_empty:
        labels = [label for label in labels if out[label].notna().any()]
    return out[[*INFO_COLUMNS, AVERAGE, *labels]]
