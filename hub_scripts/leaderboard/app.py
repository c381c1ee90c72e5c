"""PathEnhanceDS leaderboard Space (Gradio).

Reads `<LEADERBOARD_ID>-results` and `<LEADERBOARD_ID>-requests` through `huggingface_hub`, shows the
table with filters (tasks, base model, training method, weight type, model search), the submission
queue, and a form that validates a model and queues it (`pathinsight_models.leaderboard.submission`).
Evaluation happens elsewhere: `hub_scripts/worker.py` (a scheduled job or a GPU Space).

Run locally: `LEADERBOARD_ID=my-lab/pathenhanceds-leaderboard python hub_scripts/leaderboard/app.py`.
In a Space, set the variable LEADERBOARD_ID and the secret HF_TOKEN (write access to the two repos).
"""

from __future__ import annotations

import os

# Gradio reads these when imported: no usage analytics, no version check against its servers.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from pathenhanceds.errors import InputError  # noqa: E402
from pathinsight_models.leaderboard.requests import PRECISIONS  # noqa: E402
from pathinsight_models.leaderboard.table import (  # noqa: E402
    filter_table,
    requests_table,
    results_table,
    task_columns,
)
from pathinsight_models.publish.eval_results import benchmark_tasks  # noqa: E402
from pathinsight_models.publish.model_card import NOT_FOR_CLINICAL_USE  # noqa: E402

TITLE = "PathEnhanceDS leaderboard"


def load_results_table(leaderboard_id: str, token: str | None = None) -> pd.DataFrame:
    """The full leaderboard table (one row per model revision and precision; scores in %)."""
    return results_table(leaderboard_id, token=token)


def load_requests_table(leaderboard_id: str, token: str | None = None) -> pd.DataFrame:
    """The submission queue of `leaderboard_id` as a table."""
    return requests_table(leaderboard_id, token=token)


def _choices(df: pd.DataFrame, column: str) -> list[str]:
    return sorted(v for v in df[column].dropna().unique() if v)


def _about() -> str:
    rows = "\n".join(
        f"| {bt.label} | `{bt.task}` | {bt.mode} | {bt.metric} | `{bt.config}` / `{bt.split}` |" for bt in benchmark_tasks()
    )
    return (
        "Models are evaluated with `pathinsight eval` (greedy decoding, the paper's prompts and answer parsers) "
        "on the PathEnhanceDS test split. Scores are percentages; **Average** is the mean over the shown task "
        "columns a model has scores for.\n\n"
        "| column | task | mode | metric | config / split |\n|---|---|---|---|---|\n"
        f"{rows}\n\n"
        "Submit a public model repo with a model card and licence (e.g. published with `pathinsight push model`). "
        "Adapters are evaluated on their base model, which must be on the Hub.\n\n"
        f"{NOT_FOR_CLINICAL_USE}\n"
    )


def build_app(leaderboard_id: str, token: str | None = None) -> gr.Blocks:
    """The Space's UI for `leaderboard_id` (`ORG/LB`); `token` defaults to the logged-in one / HF_TOKEN."""
    from pathinsight_models.leaderboard.submission import submit

    table = load_results_table(leaderboard_id, token)
    tasks = list(task_columns())

    def refresh() -> tuple[Any, ...]:
        full = load_results_table(leaderboard_id, token)
        return (
            full,
            filter_table(full, drop_empty=True),
            gr.update(choices=_choices(full, "Base model"), value=[]),
            gr.update(choices=_choices(full, "Method"), value=[]),
            load_requests_table(leaderboard_id, token),
        )

    def apply(full: pd.DataFrame, chosen: list[str], bases: list[str], methods: list[str], types: list[str],
              query: str) -> pd.DataFrame:
        return filter_table(full, tasks=chosen, base_models=bases, methods=methods, types=types, query=query or "",
                            drop_empty=True)

    def on_submit(model: str, revision: str, precision: str) -> tuple[str, pd.DataFrame]:
        try:
            request = submit(model.strip(), leaderboard_id, revision=revision.strip() or None, precision=precision,
                             token=token)
            message = (f"Queued **{request.model}** @ `{request.revision[:12]}` ({request.weight_type}, "
                       f"{request.precision}): status {request.status}.")
        except InputError as exc:
            message = f"Not submitted: {exc}"
        return message, load_requests_table(leaderboard_id, token)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nInstruction-tuned vision-language models for histopathology, scored on "
                    f"PathEnhanceDS. Leaderboard `{leaderboard_id}`.")
        full_state = gr.State(table)
        with gr.Tabs():
            with gr.Tab("Leaderboard", id="leaderboard"):
                with gr.Row():
                    search = gr.Textbox(label="Search model", placeholder="org/name", scale=2)
                    task_filter = gr.CheckboxGroup(tasks, value=tasks, label="Tasks", scale=3)
                with gr.Row():
                    base_filter = gr.Dropdown(_choices(table, "Base model"), value=[], multiselect=True,
                                              label="Base model")
                    method_filter = gr.Dropdown(_choices(table, "Method"), value=[], multiselect=True,
                                                label="Method")
                    type_filter = gr.CheckboxGroup(["Adapter", "Merged", "Original"], value=[], label="Weights")
                results = gr.Dataframe(filter_table(table, drop_empty=True), interactive=False, wrap=True,
                                       label="Results", elem_id="leaderboard-table")
                refresh_button = gr.Button("Refresh")
            with gr.Tab("Submit", id="submit"):
                model_box = gr.Textbox(label="Model repo", placeholder="my-lab/llava-pathology-lora")
                with gr.Row():
                    revision_box = gr.Textbox(label="Revision", placeholder="main")
                    precision_box = gr.Dropdown(list(PRECISIONS), value="float32", label="Precision")
                submit_button = gr.Button("Submit for evaluation", variant="primary")
                submit_status = gr.Markdown()
            with gr.Tab("Queue", id="queue"):
                queue = gr.Dataframe(load_requests_table(leaderboard_id, token), interactive=False, wrap=True,
                                     label="Requests")
            with gr.Tab("About", id="about"):
                gr.Markdown(_about())

        filters = [full_state, task_filter, base_filter, method_filter, type_filter, search]
        for control in filters[1:]:
            control.change(apply, filters, results, api_name=False)
        refresh_button.click(refresh, None, [full_state, results, base_filter, method_filter, queue],
                             api_name="refresh")
        submit_button.click(on_submit, [model_box, revision_box, precision_box], [submit_status, queue],
                            api_name="submit")
    return demo


if __name__ == "__main__":
    leaderboard = os.environ.get("LEADERBOARD_ID")
    if not leaderboard:
        raise SystemExit("set LEADERBOARD_ID=ORG/LB (the results live in ORG/LB-results, requests in ORG/LB-requests)")
    # GRADIO_SERVER_NAME is 0.0.0.0 in Spaces; locally Gradio's default 127.0.0.1 applies. Never a share link.
    build_app(leaderboard).launch(share=False)
