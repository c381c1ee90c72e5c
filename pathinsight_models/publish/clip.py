"""Publishing the CLIP track's models: pathology CLIP/SigLIP dual encoders and assembled LLaVA models.

`pathinsight push model RUN_DIR` tells what RUN_DIR is from its marker (`pathenhanceds.atomic` output
kinds) and metadata (`run_kind`), and for the two kinds here stages:

- **CLIP** (a `clip train` run, a `clip convert` or `clip tiny` folder, or any folder whose config is a
  CLIP/SigLIP): the safetensors weights, config and processor files, `clip_args.json` and `metrics.jsonl`
  of a training run (Hub ids instead of local paths), the `clip eval` results (`clip_eval_results.json`)
  and a zero-shot card: `pipeline_tag: zero-shot-image-classification`, `library_name: transformers`,
  `base_model`, `datasets`, the combined licence and a `model-index` with, per zero-shot task, accuracy,
  balanced accuracy and weighted F1, the linear probe's accuracy and balanced accuracy, and the
  retrieval recalls.
- **Assembled VLM** (`models assemble` output, `assembly.json`): weights, config, processor and chat
  template, `assembly.json` with Hub ids, and a card whose `base_model` lists the vision encoder and the
  language model (the lineage), licence = the more restrictive of the two parents'.

Local paths never reach the Hub: a parent or dataset given as a local folder must be named by its Hub
id (`--base-model-id`, `--vision-model-id`, `--language-model-id`, `--dataset-id`, `--results-dataset-id`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathinsight_models.hub import check_publishable, check_repo_id, is_hub_id, is_local_path

from .model_card import NOT_FOR_CLINICAL_USE, combine_licenses

CLIP_PIPELINE_TAG = "zero-shot-image-classification"
CLIP_MODEL_TYPES = ("clip", "siglip", "siglip2")
# Keys of clip_args.json that name places or switches of the training machine: not published.
_CLIP_LOCAL_KEYS = ("resume", "overwrite")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path.name}: {exc}", file=path) from None
    if not isinstance(data, dict):
        raise InputError(f"{path.name} must hold a JSON object", file=path)
    return data


def run_kind(run: Path) -> str:
    """`clip`, `assembled` or `sft` (a `pathinsight train` run / anything else), from markers then config."""
    from pathenhanceds.atomic import OUTPUT_KINDS

    if OUTPUT_KINDS.get("assembled").recognise(run):
        return "assembled"
    if any(OUTPUT_KINDS.get(k).recognise(run) for k in ("clip-train", "clip-convert", "clip-tiny")):
        return "clip"
    if (run / "config.json").is_file() and not (run / "adapter_config.json").is_file():
        model_type = _read_json(run / "config.json").get("model_type")
        if model_type in CLIP_MODEL_TYPES:
            return "clip"
    return "sft"


def is_clip_results(results: Mapping[str, Any]) -> bool:
    """True for a `clip eval` results.json (its marker, or the fields of one written before it)."""
    from pathenhanceds.atomic import GENERATOR_KEY, OUTPUT_KINDS

    if GENERATOR_KEY in results:
        return results[GENERATOR_KEY] == OUTPUT_KINDS.get("clip-eval").generator
    return "encoder" in results and "tasks" in results and "schema_version" not in results


def _hub_name(value: str | None) -> str | None:
    """A Hub id from a model name (`hf-hub:` stripped), or None for local paths and non-ids."""
    if not value:
        return None
    text = str(value).removeprefix("hf-hub:")
    return text if is_hub_id(text) else None


def _id_or_override(override: str | None, value: str | None, flag: str, what: str) -> str | None:
    if override:
        if is_local_path(override):
            raise InputError(f"{flag} must be a Hub id, not a local path ({override!r})", fix=f"pass {what}'s Hub id")
        return check_repo_id(override, what)
    if value and not _hub_name(value):
        raise InputError(f"the {what} is a local folder ({value}); the Hub repo must name its Hub id",
                         fix=f"pass {flag} ORG/NAME (the id of the same weights on the Hub)")
    return _hub_name(value)


def _copy_model_files(run: Path, stage: Path) -> None:
    from .model import MODEL_CONFIG_FILES, PROCESSOR_FILES, _weights

    for w in _weights(run, adapter=False):
        shutil.copy2(w, stage / w.name)
    for name in (*MODEL_CONFIG_FILES, *PROCESSOR_FILES):
        if (run / name).is_file():
            shutil.copy2(run / name, stage / name)
    if not any((stage / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise InputError("the folder has no processor / tokenizer files", file=run,
                         fix="save the processor next to the weights (`processor.save_pretrained(folder)`)")


def _licence(api: Any, repo_id: str | None, repo_type: str, override: str | None, flag: str, offline: bool) -> str:
    from .model import _hub_license

    if repo_id is None or offline:
        if not override:
            what = "base model" if repo_type == "model" else "dataset"
            raise InputError(f"the licence of the {what} cannot be read from the Hub here", fix=f"pass {flag} ID")
        return override.strip().lower()
    return _hub_license(api, repo_id, repo_type, override, flag)


# ------------------------------------------------------------------------------------------------ CLIP
def clip_eval_results(results: Mapping[str, Any], dataset_id: str) -> list[Any]:
    """`EvalResult`s (`model-index`) of a `clip eval` results.json on the Hub dataset `dataset_id`."""
    from huggingface_hub import EvalResult

    split = str(results.get("split", "test"))
    out = []

    def add(task_type: str, task_name: str, config: str, metric: str, name: str, value: Any) -> None:
        if isinstance(value, int | float) and value == value:  # NaN (e.g. an empty class) is not reported
            out.append(EvalResult(task_type=task_type, task_name=task_name, dataset_type=dataset_id,
                                  dataset_name=dataset_id.split("/")[-1], dataset_config=config, dataset_split=split,
                                  metric_type=metric, metric_name=name, metric_value=round(float(value), 6)))

    # model-index groups metrics by (task type, dataset, config, split): zero-shot tasks sharing the
    # classification config share a group, so each metric type carries the task name (crc100k_accuracy).
    for task, entry in (results.get("tasks") or {}).items():
        if "zero_shot" in entry:
            zs, config = entry["zero_shot"], "classification"
            for metric, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                                  ("weighted_f1", "weighted F1")):
                add(CLIP_PIPELINE_TAG, "Zero-shot image classification", config, f"{task}_{metric}",
                    f"{task} zero-shot {label}", zs.get(metric))
            probe = entry.get("linear_probe")
            if probe:
                for metric, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy")):
                    add("image-classification", "Linear probe", config, f"{task}_linear_probe_{metric}",
                        f"{task} linear-probe {label}", probe.get(metric))
        else:  # retrieval: image->text and text->image Recall@k
            for key, value in entry.items():
                if "_R@" in key:
                    direction, k = key.split("_R@")
                    add("image-feature-extraction", "Image-text retrieval", "captioning",
                        f"{direction}_recall@{k}", f"{direction.replace('_to_', '→')} Recall@{k}", value)
    return out


def _results_table(results: Mapping[str, Any]) -> str:
    lines = ["| task | evaluation | accuracy | balanced accuracy (95% CI) | weighted F1 | n |",
             "|---|---|---|---|---|---|"]
    recall_lines = []
    for task, entry in (results.get("tasks") or {}).items():
        for mode in ("zero_shot", "linear_probe"):
            r = entry.get(mode)
            if not r:
                continue
            ci = (r.get("ci95") or {}).get("balanced_accuracy")
            ci_text = f" ({ci[0]:.4f} – {ci[1]:.4f})" if ci and None not in ci else ""
            lines.append(f"| {task} | {mode.replace('_', '-')} | {r['accuracy']:.4f} | "
                         f"{r['balanced_accuracy']:.4f}{ci_text} | {r.get('weighted_f1', float('nan')):.4f} | "
                         f"{r.get('n', '–')} |")
        if "zero_shot" not in entry:
            recall_lines.append(f"- {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if "_R@" in k)
                                + f" ({entry.get('n_images', '–')} images)")
    return "\n".join(lines + ([""] + recall_lines if recall_lines else []))


def build_clip_card(repo_id: str, *, base_model: str | None, dataset_id: str | None, license_: str,
                    base_license: str | None, dataset_license: str | None, run_info: Mapping[str, Any],
                    clip_args: Mapping[str, Any], results: Mapping[str, Any] | None,
                    results_dataset_id: str | None) -> Any:
    """A `huggingface_hub.ModelCard` for a pathology CLIP/SigLIP dual encoder (zero-shot card)."""
    from huggingface_hub import ModelCard, ModelCardData

    eval_results = clip_eval_results(results, results_dataset_id) if results and results_dataset_id else None
    data = ModelCardData(
        base_model=base_model, base_model_relation="finetune" if base_model and dataset_id else None,
        datasets=[dataset_id] if dataset_id else None, library_name="transformers", license=license_,
        license_name="combined-base-and-dataset" if license_ == "other" else None, language=["en"],
        pipeline_tag=CLIP_PIPELINE_TAG, tags=["pathinsight", "histopathology", "pathology", "medical", "clip",
                                              "zero-shot-image-classification"],
        model_name=repo_id, eval_results=eval_results or None,
    )
    name = repo_id.split("/")[-1]
    model_type = run_info.get("model_type") or "CLIP"
    origin = (f"adapted from [`{base_model}`](https://huggingface.co/{base_model})" if base_model
              else "trained from a random initialisation")
    trained = (f" contrastively on [{dataset_id}](https://huggingface.co/datasets/{dataset_id})" if dataset_id else "")
    facts = {k: run_info.get(k) for k in ("method", "global_step", "train_loss", "pairs")}
    facts |= {k: clip_args.get(k) for k in ("dataset_config", "class_captions", "lock_image_tower",
                                            "lock_text_tower")}
    rows = "\n".join(f"- {k}: `{v}`" for k, v in facts.items() if v is not None)
    body = [f"# {name}", "",
            f"{name} is a `{model_type}` dual encoder for histopathology, {origin}{trained} with PathInsight "
            "(`pathinsight clip train`).", "",
            "## Intended use", "",
            "Research: zero-shot classification and image–text retrieval of H&E patches, frozen features for "
            "linear probes, and the vision tower of a LLaVA-style assistant (`pathinsight models assemble`).", "",
            NOT_FOR_CLINICAL_USE, "",
            "## How to use", "",
            f'```python\nimport torch\nfrom PIL import Image\nfrom transformers import AutoModel, AutoProcessor\n\n'
            f'model = AutoModel.from_pretrained("{repo_id}")\nprocessor = AutoProcessor.from_pretrained("{repo_id}")\n'
            'labels = ["an H&E image of tumor.", "an H&E image of normal tissue."]\n'
            'inputs = processor(text=labels, images=Image.open("patch.png").convert("RGB"), return_tensors="pt",\n'
            '                   padding=True)\nwith torch.no_grad():\n'
            '    probs = model(**inputs).logits_per_image.softmax(dim=-1)\n```', "",
            f"Benchmark it: `pathinsight clip eval --model {repo_id} --data DATASET --tasks crc100k,pcam,retrieval "
            "--output results/`.", "",
            "## Training", "", rows or "Not trained with `pathinsight clip train` (see `base_model`).", "",
            "## Evaluation", ""]
    if results:
        where = results_dataset_id or "the evaluation data"
        body += [f"`pathinsight clip eval` on {where} (split `{results.get('split', 'test')}`"
                 + (f", at most {results['limit']} rows per task" if results.get("limit") else "")
                 + "): zero-shot with prompt ensembles (class synonyms × templates), linear probe on frozen "
                 "features, retrieval Recall@k; percentile bootstrap CIs. Full results: `clip_eval_results.json`.",
                 "", _results_table(results), ""]
    else:
        body += ["Not evaluated yet: run `pathinsight clip eval` and push again with `--results results.json`.", ""]
    body += ["## Licence", "",
             f"`{license_}`: the most restrictive of the base model's (`{base_license or 'none'}`) and the "
             f"training data's (`{dataset_license or 'none'}`) licences; comply with both.", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def stage_clip(run: Path, repo_id: str, stage: Path, *, results: Mapping[str, Any] | None,
               base_model_id: str | None, dataset_id: str | None, results_dataset_id: str | None,
               base_license: str | None, dataset_license: str | None, token: str | None, api: Any,
               offline: bool) -> Any:
    """Stage a CLIP/SigLIP folder (see module docstring); returns a `ModelPushResult`."""
    from .model import ModelPushResult

    if results is not None and not is_clip_results(results):
        raise InputError("these results are not from `pathinsight clip eval`",
                         fix="pass the results.json written by `pathinsight clip eval` for a CLIP model")
    run_info = _read_json(run / "run_info.json") if (run / "run_info.json").is_file() else {}
    clip_args = _read_json(run / "clip_args.json") if (run / "clip_args.json").is_file() else {}
    conversion = _read_json(run / "conversion.json") if (run / "conversion.json").is_file() else {}
    base_source = run_info.get("base_model") or conversion.get("source")
    base = _id_or_override(base_model_id, base_source, "--base-model-id", "base model")
    data_source = clip_args.get("dataset_name")
    data_id = _id_or_override(dataset_id, data_source, "--dataset-id", "training dataset")
    eval_id = None
    if results is not None:
        eval_source = str(results.get("data") or "")
        if results_dataset_id:
            eval_id = _id_or_override(results_dataset_id, None, "--results-dataset-id", "evaluation dataset")
        elif _hub_name(eval_source):
            eval_id = _hub_name(eval_source)
        elif data_source and data_id and Path(eval_source).expanduser().resolve() == Path(data_source).expanduser().resolve():
            eval_id = data_id  # evaluated on the training dataset's folder (its test split)
        else:
            raise InputError(f"the clip eval results were computed on a local dataset ({eval_source})",
                             fix="pass --results-dataset-id ORG/NAME (the Hub id of that dataset)")
    if base is None and not base_license:
        raise InputError("this model has no base model to take a licence from", fix="pass --base-license ID")
    base_lic = _licence(api, base, "model", base_license, "--base-license", offline)
    data_lic = _licence(api, data_id, "dataset", dataset_license, "--dataset-license", offline) if data_id else None

    _copy_model_files(run, stage)
    if clip_args:
        published = {k: v for k, v in clip_args.items() if k not in _CLIP_LOCAL_KEYS}
        published["model_name_or_path"], published["dataset_name"] = base, data_id
        (stage / "clip_args.json").write_text(json.dumps(published, indent=2) + "\n", encoding="utf-8")
    if (run / "metrics.jsonl").is_file():
        shutil.copy2(run / "metrics.jsonl", stage / "metrics.jsonl")
    if results is not None:
        shown = {**results, "model": repo_id, "data": eval_id}
        (stage / "clip_eval_results.json").write_text(json.dumps(shown, indent=2) + "\n", encoding="utf-8")
    license_ = combine_licenses([base_lic, data_lic or ""])
    info = {k: v for k, v in run_info.items() if k not in ("base_model", "generator", "library_version")}
    build_clip_card(repo_id, base_model=base, dataset_id=data_id, license_=license_, base_license=base_lic,
                    dataset_license=data_lic, run_info=info, clip_args=clip_args, results=results,
                    results_dataset_id=eval_id).save(stage / "README.md")
    local = [str(run.resolve())] + [str(p) for p in (base_source, data_source, results and results.get("data"))
                                    if p and is_local_path(str(p))]
    check_publishable(stage, token=token, extra_paths=local)
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    return ModelPushResult(repo_id, None, "Original", base or "", license_, files)


# ------------------------------------------------------------------------------------------ assembled
def build_assembled_card(repo_id: str, lineage: Mapping[str, Any], *, vision_id: str, language_id: str,
                         license_: str, vision_license: str, language_license: str) -> Any:
    """A card for a `models assemble` output: both parents in `base_model`, settings, how to train it."""
    from huggingface_hub import ModelCard, ModelCardData

    # Two parents: the Hub shows them as the model's lineage (it infers the relation for several bases).
    data = ModelCardData(base_model=[vision_id, language_id], library_name="transformers", license=license_,
                         license_name="combined-base-models" if license_ == "other" else None,
                         pipeline_tag="image-text-to-text", language=["en"], model_name=repo_id,
                         tags=["pathinsight", "histopathology", "pathology", "llava", "vision-language"])
    name = repo_id.split("/")[-1]
    settings = {k: lineage.get(k) for k in ("projector", "vision_feature_layer", "vision_feature_select_strategy",
                                            "num_additional_image_tokens", "image_size", "image_seq_length", "seed")}
    rows = "\n".join(f"- {k}: `{v}`" for k, v in settings.items() if v is not None)
    body = [f"# {name}", "",
            f"A `LlavaForConditionalGeneration` assembled by PathInsight (`pathinsight models assemble`) from the "
            f"vision encoder [`{vision_id}`](https://huggingface.co/{vision_id}) (weights copied exactly into "
            f"`model.vision_tower`) and the language model [`{language_id}`](https://huggingface.co/{language_id}). "
            "The projector is randomly initialised: train stage 1 (projector alignment on captions) and stage 2 "
            "before use.", "", NOT_FOR_CLINICAL_USE, "", "## Assembly", "", rows, "",
            "`assembly.json` in this repo holds the same settings.", "", "## How to use", "",
            f'```python\nfrom transformers import AutoModelForImageTextToText, AutoProcessor\n\n'
            f'model = AutoModelForImageTextToText.from_pretrained("{repo_id}")\n'
            f'processor = AutoProcessor.from_pretrained("{repo_id}")\n```', "",
            f"Train: `pathinsight train --config recipes/pathclip_vicuna_stage1.yaml --model_name_or_path {repo_id}`.",
            "", "## Licence", "",
            f"`{license_}`: the most restrictive of the vision encoder's (`{vision_license}`) and the language "
            f"model's (`{language_license}`) licences; comply with both.", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def stage_assembled(run: Path, repo_id: str, stage: Path, *, vision_model_id: str | None,
                    language_model_id: str | None, vision_license: str | None, language_license: str | None,
                    token: str | None, api: Any, offline: bool) -> Any:
    """Stage a `models assemble` output (see module docstring); returns a `ModelPushResult`."""
    from pathenhanceds.atomic import GENERATOR_KEY

    from .model import ModelPushResult

    lineage = _read_json(run / "assembly.json")
    vision = _id_or_override(vision_model_id, lineage.get("vision"), "--vision-model-id", "vision encoder")
    language = _id_or_override(language_model_id, lineage.get("language"), "--language-model-id", "language model")
    if vision is None or language is None:
        raise InputError("assembly.json does not name both parents", file=run / "assembly.json",
                         fix="pass --vision-model-id and --language-model-id")
    vision_lic = _licence(api, vision, "model", vision_license, "--vision-license", offline)
    language_lic = _licence(api, language, "model", language_license, "--language-license", offline)
    license_ = combine_licenses([vision_lic, language_lic])
    _copy_model_files(run, stage)
    # The sub-configs remember where their parents were loaded from: name them by their Hub ids instead.
    config = _read_json(stage / "config.json")
    for key, parent in (("text_config", language), ("vision_config", vision)):
        if isinstance(config.get(key), dict) and is_local_path(config[key].get("_name_or_path")):
            config[key]["_name_or_path"] = parent
    if is_local_path(config.get("_name_or_path")):
        config["_name_or_path"] = repo_id
    (stage / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    published = {k: v for k, v in lineage.items() if k not in (GENERATOR_KEY, "library_version")}
    published["vision"], published["language"] = vision, language
    (stage / "assembly.json").write_text(json.dumps(published, indent=2) + "\n", encoding="utf-8")
    build_assembled_card(repo_id, published, vision_id=vision, language_id=language, license_=license_,
                         vision_license=vision_lic, language_license=language_lic).save(stage / "README.md")
    local = [str(run.resolve())] + [str(p) for p in (lineage.get("vision"), lineage.get("language"))
                                    if p and is_local_path(str(p))]
    check_publishable(stage, token=token, extra_paths=local)
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    return ModelPushResult(repo_id, None, "Original", vision, license_, files)
