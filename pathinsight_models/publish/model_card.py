"""Model cards for fine-tuned PathInsight models (`huggingface_hub.ModelCard` / `ModelCardData`).

Pure functions: the caller gathers the facts (base model and dataset ids and licences, the resolved
training recipe, `pathinsight eval` results) and gets back a card whose YAML carries `base_model`,
`datasets`, `library_name`, `license`, tags, the training settings and `model-index`, and whose body
says how to load the model, what it is (not) for, how it was trained and how it scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from pathenhanceds.write.licenses import dataset_license, is_non_commercial

from .eval_results import BENCHMARK_NAME, benchmark_tasks, headline_scores, metric_value

PIPELINE_TAG = "image-text-to-text"
WEIGHT_TYPES = ("Adapter", "Merged", "Original")
# Hub `base_model_relation` per weight type: a merged LoRA is a fine-tune of the base.
BASE_MODEL_RELATION = {"Adapter": "adapter", "Merged": "finetune", "Original": "finetune"}
# Recipe keys that name places on the training machine: replaced by Hub ids or dropped.
_RECIPE_LOCAL_KEYS = ("output_dir", "logging_dir", "resume", "hub_token", "hub_model_id", "push_to_hub")

NOT_FOR_CLINICAL_USE = (
    "**Not for clinical use.** This model is a research artefact. It has not been validated for "
    "diagnosis, prognosis or any decision about patients, and its answers can be fluent and wrong."
)


def combine_licenses(licenses: Sequence[str]) -> str:
    """The most restrictive licence of the base model and the training data (unknown ones give `other`)."""
    return dataset_license([lic for lic in licenses if lic])


@dataclass
class CardInfo:
    """What a model card states. `recipe` must already be sanitised (see `sanitize_recipe`)."""

    repo_id: str
    base_model: str
    weight_type: str  # Adapter | Merged | Original
    base_license: str
    dataset_ids: list[str] = field(default_factory=list)
    dataset_license: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] | None = None
    extra_tags: list[str] = field(default_factory=list)
    # Hub ids the run continued from (an adapter it kept training, or one merged in before training):
    # listed after `base_model` in the card's `base_model` lineage.
    parents: list[str] = field(default_factory=list)

    @property
    def lineage(self) -> list[str]:
        """`base_model` of the card: the base model, then the parent adapters/models the run continued from."""
        return [self.base_model] + [p for p in self.parents if p != self.base_model]

    @property
    def license(self) -> str:
        """The card's licence: base model and dataset licences combined."""
        return combine_licenses([self.base_license, self.dataset_license or ""])

    @property
    def library_name(self) -> str:
        """`peft` for an adapter repo, `transformers` otherwise."""
        return "peft" if self.weight_type == "Adapter" else "transformers"

    @property
    def method(self) -> str | None:
        """Training method (full/lora/qlora) from the recipe or run info."""
        return self.recipe.get("method") or self.run_info.get("method")


def sanitize_recipe(recipe: Mapping[str, Any], base_model: str, dataset_id: str | None,
                    lineage: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved recipe as published: Hub ids instead of local paths, run-local keys dropped.

    `lineage` is the run's `run_info.json` lineage: a continued adapter (`start: adapter`) stays the
    `model_name_or_path` and a merged-in one (`start: stacked`) the `adapter` when they are Hub ids.
    """
    from pathinsight_models.hub import is_hub_id

    out = {k: v for k, v in recipe.items() if k not in _RECIPE_LOCAL_KEYS}
    out["model_name_or_path"] = base_model
    lineage = lineage or {}
    parent = lineage.get("parent") if lineage.get("parent_kind") == "adapter" else None
    parent = parent if parent and is_hub_id(parent) else None
    if lineage.get("start") == "adapter" and parent:
        out["model_name_or_path"] = parent
    if out.get("adapter"):
        out["adapter"] = parent if lineage.get("start") == "stacked" else None
    if "dataset_name" in out:
        out["dataset_name"] = dataset_id
    return out


def model_index_results(results: Mapping[str, Any], dataset_id: str) -> list[Any]:
    """`EvalResult`s (legacy `model-index`) for the headline metrics in a results.json."""
    from huggingface_hub import EvalResult

    out = []
    for bt, value in headline_scores(results):
        out.append(
            EvalResult(
                task_type=PIPELINE_TAG,
                # model-index groups metrics by (task type, dataset, config, split): crc and pcam share
                # `classification`, so the metric type carries the benchmark task id (crc_f1, pcam_accuracy).
                task_name=f"{BENCHMARK_NAME} {bt.config}",
                dataset_type=dataset_id,
                dataset_name=BENCHMARK_NAME,
                dataset_config=bt.config,
                dataset_split=results.get("split", bt.split),
                metric_type=bt.id,
                metric_name=bt.label,
                metric_value=round(value, 6),
            )
        )
    return out


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def eval_table(results: Mapping[str, Any]) -> str:
    """Markdown table: one row per task and mode, headline metrics first, with n and 95% CIs."""
    headline = {(bt.task, bt.mode, bt.metric) for bt in benchmark_tasks()}
    lines = ["| task | mode | metric | value | 95% CI | n |", "|---|---|---|---|---|---|"]
    for name, result in (results.get("tasks") or {}).items():
        for mode, metrics in (result.get("metrics") or {}).items():
            ordered = sorted(metrics, key=lambda m: ((name, mode, m) not in headline, m))
            for metric in ordered:
                entry = metrics[metric]
                ci = entry.get("ci") if isinstance(entry, Mapping) else None
                ci_text = f"{ci[0]:.4f} – {ci[1]:.4f}" if ci and None not in ci else "–"
                mark = "**" if (name, mode, metric) in headline else ""
                value = metric_value(result, mode, metric)
                lines.append(
                    f"| {name} | {mode} | {mark}{metric}{mark} | {_fmt(value)} | {ci_text} | {result.get('n', '–')} |"
                )
    return "\n".join(lines)


def _usage(info: CardInfo) -> str:
    code = f'''```python
from PIL import Image
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{info.repo_id}")
processor = AutoProcessor.from_pretrained("{info.repo_id}")
messages = [{{"role": "user", "content": [{{"type": "image"}},
             {{"type": "text", "text": "What type of tissue is shown?"}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=[Image.open("patch.png").convert("RGB")], text=prompt, return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=64, do_sample=False)
print(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))

# The backbone without the language-model head (hidden states, e.g. for features or probes):
backbone = AutoModel.from_pretrained("{info.repo_id}")
hidden = backbone(**inputs).last_hidden_state
```'''
    if info.weight_type == "Adapter":
        code += f'''

With PEFT directly (e.g. to keep training this adapter, `is_trainable=True`):

```python
from peft import PeftModel
from transformers import AutoModelForImageTextToText

base = AutoModelForImageTextToText.from_pretrained("{info.base_model}")
model = PeftModel.from_pretrained(base, "{info.repo_id}")
```'''
    note = ""
    if info.weight_type == "Adapter":
        note = (
            f"\nThis repo holds a PEFT LoRA adapter: `from_pretrained` reads `adapter_config.json`, downloads the "
            f"base model [`{info.base_model}`](https://huggingface.co/{info.base_model}) and applies the adapter "
            "(`peft` must be installed). The processor and chat template used in training are in this repo.\n"
        )
    cli = f"\nOr with the PathInsight command line: `pathinsight chat --model {info.repo_id} --image patch.png --question \"...\"`.\n"
    return code + "\n" + note + cli


def _license_text(info: CardInfo) -> str:
    text = (
        f"The licence of this model (`{info.license}`) is the most restrictive of the base model's "
        f"(`{info.base_license}`) and the training data's (`{info.dataset_license or 'unknown'}`). "
        "You must comply with both, and with the licences of the individual data sources listed on the "
        "dataset card."
    )
    if is_non_commercial([info.base_license, info.dataset_license or ""]) or info.license == "other":
        text += " Some of them restrict commercial use: check them before any such use."
    return text


def _training(info: CardInfo) -> str:
    facts = {
        "method": info.method,
        "stage": info.recipe.get("stage") or info.run_info.get("stage"),
        "family": info.run_info.get("family") or info.recipe.get("family"),
        "steps": info.run_info.get("global_step"),
        "published as": {"Adapter": "LoRA adapter", "Merged": "adapter merged into the base weights",
                         "Original": "full weights"}[info.weight_type],
    }
    rows = "\n".join(f"- {k}: `{v}`" for k, v in facts.items() if v is not None)
    versions = info.run_info.get("versions") or {}
    vers = ", ".join(f"{k} {v}" for k, v in versions.items())
    recipe = yaml.safe_dump(info.recipe, sort_keys=True, allow_unicode=True).strip()
    return (
        f"Fine-tuned with TRL `SFTTrainer`{' and PEFT LoRA' if info.weight_type != 'Original' else ''} "
        f"through `pathinsight train`.\n\n{rows}\n"
        + (f"- library versions: {vers}\n" if vers else "")
        + "\nResolved training recipe (`recipe.yaml` in this repo; rerun with "
        + "`pathinsight train --config recipe.yaml --output_dir DIR`):\n\n"
        + f"```yaml\n{recipe}\n```\n"
    )


def build_model_card(info: CardInfo) -> Any:
    """A `huggingface_hub.ModelCard` for a fine-tuned model (adapter, merged or full weights)."""
    from huggingface_hub import ModelCard, ModelCardData

    if info.weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight_type must be one of {WEIGHT_TYPES}, got {info.weight_type!r}")
    dataset_id = info.dataset_ids[0] if info.dataset_ids else None
    eval_results = model_index_results(info.results, dataset_id) if info.results and dataset_id else None
    tags = ["pathinsight", "histopathology", "pathology", "medical", "vision-language", "trl", "sft"]
    if info.weight_type == "Adapter":
        tags += ["lora", "peft"]
    elif info.weight_type == "Merged":
        tags += ["lora", "merged"]
    tags += [t for t in info.extra_tags if t not in tags]
    training = {k: v for k, v in {
        "weight_type": info.weight_type,
        "method": info.method,
        "stage": info.recipe.get("stage"),
        "family": info.run_info.get("family") or info.recipe.get("family"),
    }.items() if v is not None}
    data = ModelCardData(
        base_model=info.lineage if len(info.lineage) > 1 else info.base_model,
        base_model_relation=BASE_MODEL_RELATION[info.weight_type],
        datasets=info.dataset_ids or None,
        library_name=info.library_name,
        license=info.license,
        license_name="combined-base-and-dataset" if info.license == "other" else None,
        language=["en"],
        pipeline_tag=PIPELINE_TAG,
        tags=tags,
        model_name=info.repo_id,
        eval_results=eval_results,
        training=training,
    )
    name = info.repo_id.split("/")[-1]
    what = {"Adapter": "a LoRA adapter for", "Merged": "a fine-tune (LoRA merged into the weights) of",
            "Original": "a fine-tune of"}[info.weight_type]
    data_text = ", ".join(f"[{d}](https://huggingface.co/datasets/{d})" for d in info.dataset_ids) or "histopathology data"
    body = [
        f"# {name}",
        "",
        f"{name} is {what} [`{info.base_model}`](https://huggingface.co/{info.base_model}), instruction-tuned "
        f"for histopathology on {data_text} with the PathInsight training recipes.",
        "",
        *([f"Continued from {', '.join(f'[`{p}`](https://huggingface.co/{p})' for p in info.lineage[1:])} "
           "(see `base_model` in this card's metadata for the lineage).", ""] if info.lineage[1:] else []),
        "## Intended use",
        "",
        "Research on vision-language models for histopathology: describing H&E patches, tissue typing, "
        "answering questions about pathology images, and benchmarking against other models.",
        "",
        NOT_FOR_CLINICAL_USE,
        "",
        "Limitations: trained on public research datasets with their biases (stains, scanners, organs, "
        "institutions); it may hallucinate findings, and it was evaluated only on the tasks below.",
        "",
        "## How to use",
        "",
        _usage(info),
        "## Training",
        "",
        _training(info),
        "## Evaluation",
        "",
    ]
    if info.results:
        body += [
            f"`pathinsight eval` on {BENCHMARK_NAME} (split `{info.results.get('split', 'test')}`"
            + (f", at most {info.results['limit']} rows per task" if info.results.get("limit") else "")
            + "); headline metrics in bold, percentile bootstrap CIs.",
            "",
            eval_table(info.results),
            "",
        ]
    else:
        body += ["Not evaluated yet: run `pathinsight eval` and push again with `--results results.json`.", ""]
    body += ["## Licence", "", _license_text(info), ""]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)
    return ModelCard(content)
