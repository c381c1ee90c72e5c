"""Publish a training run (`pathinsight train` output) to a Hub model repo, in one commit.

What goes up is assembled in a staging folder first and checked there:

- weights in safetensors only: the LoRA adapter (`adapter_config.json` with `base_model_name_or_path`
  rewritten to the base model's Hub id), or with `merged=True` the adapter merged into the base
  weights, or the full weights of a full fine-tune; pickled weights (`.bin`, `.pt`, ...) are refused
  and the Trainer's pickled `training_args.bin` is never published;
- the processor files and chat template the run saved;
- `recipe.yaml` (the resolved recipe with Hub ids instead of local paths), `README.md` (model card,
  see `model_card.py`) and, given a `pathinsight eval` results.json, `.eval_results/pathenhanceds.yaml`.

Nothing is sent when any text file still holds a local absolute path or the token. The token comes
from the argument, `HF_TOKEN` or `hf auth login`, and is only handed to `huggingface_hub`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pathenhanceds.errors import InputError
from pathinsight_models.hub import check_publishable, check_repo_id, hub_api, is_hub_id, is_local_path

# Pickle-based checkpoint formats: loading them can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz")
TRAINER_ARTEFACTS = ("training_args.bin",)  # pickled TrainingArguments: never published, never a weight
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)
MODEL_CONFIG_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


@dataclass
class ModelPushResult:
    """What `push_model` published: the commit (`.oid` = sha) and the facts on the card."""

    repo_id: str
    commit: Any  # huggingface_hub.CommitInfo
    weight_type: str
    base_model: str
    license: str
    files: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or not UTF-8
        raise InputError(f"cannot read {path.name}: {exc}", file=path) from None
    if not isinstance(data, dict):
        raise InputError(f"{path.name} must hold a JSON object", file=path)
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path.name} is not valid YAML: {exc}", file=path) from None
    return data if isinstance(data, dict) else {}


def _weights(run_dir: Path, adapter: bool) -> list[Path]:
    """The run's safetensors weights; refuses runs whose weights exist only in a pickle format."""
    files = [p for p in run_dir.iterdir() if p.is_file()]
    pickled = [p for p in files if p.suffix in PICKLE_SUFFIXES and p.name not in TRAINER_ARTEFACTS]
    if adapter:
        safe = [p for p in files if p.name == "adapter_model.safetensors"]
    else:
        safe = [p for p in files if re.fullmatch(r"model(-\d{5}-of-\d{5})?\.safetensors", p.name)]
    if not safe:
        found = f" (found {pickled[0].name}, a pickle format)" if pickled else ""
        raise InputError(
            f"no safetensors weights in the run directory{found}",
            file=run_dir,
            fix="only safetensors are published: save with `save_pretrained(..., safe_serialization=True)` "
            "(the default of `pathinsight train`); pickled .bin/.pt checkpoints are refused",
        )
    return sorted(safe)


def _base_model_id(
    override: str | None, recipe: Mapping[str, Any], adapter_cfg: Mapping[str, Any], run_info: Mapping[str, Any]
) -> tuple[str, str | None]:
    """(Hub id of the base model, local base directory if the run used one)."""
    if override:
        if is_local_path(override):
            raise InputError(
                f"--base-model-id must be a Hub id, not a local path ({override!r})",
                fix="pass the id the base model has on the Hub, e.g. llava-hf/llava-1.5-7b-hf",
            )
        local = next(
            (c for c in (adapter_cfg.get("base_model_name_or_path"), recipe.get("model_name_or_path"))
             if c and is_local_path(c) and Path(c).expanduser().is_dir()),
            None,
        )
        return check_repo_id(override, "base model id"), local
    # run_info's base_model is what the weights apply to (for a continued adapter, its original base, while
    # the recipe's model_name_or_path names the adapter); older runs wrote the recipe's value there.
    candidates = [run_info.get("base_model"), recipe.get("model_name_or_path"), adapter_cfg.get("base_model_name_or_path")]
    candidates = [c for c in candidates if c]
    if not candidates:
        raise InputError("cannot tell the base model of this run (no recipe.yaml / adapter_config.json)",
                         fix="pass --base-model-id ORG/NAME")
    local = next((c for c in candidates if is_local_path(c)), None)
    hub = next((c for c in candidates if not is_local_path(c)), None)
    if hub is None:
        raise InputError(
            f"the run was trained from a local base model ({candidates[0]}); the Hub repo must name its Hub id",
            fix="pass --base-model-id ORG/NAME (the id of the same weights on the Hub)",
        )
    return check_repo_id(hub, "base model id"), local


def _dataset_id(override: str | None, recipe: Mapping[str, Any], results: Mapping[str, Any] | None) -> str:
    if override:
        if is_local_path(override):
            raise InputError(f"--dataset-id must be a Hub id, not a local path ({override!r})",
                             fix="push the dataset first (`pathinsight push dataset`) and pass its id")
        return check_repo_id(override, "dataset id")
    candidates = [recipe.get("dataset_name")]
    if results:
        data = results.get("data") or {}
        if data.get("kind") == "hub":
            candidates.append(data.get("path"))
    for c in candidates:
        if is_hub_id(c):
            return str(c)
    raise InputError(
        "the run was trained on a local dataset folder; the model card must name the Hub dataset",
        fix="pass --dataset-id ORG/NAME (push the build first with `pathinsight push dataset`)",
    )


def _hub_license(api: Any, repo_id: str, repo_type: str, override: str | None, flag: str) -> str:
    """Licence from the repo's card on the Hub (or `override`); InputError when the repo is missing."""
    from huggingface_hub.errors import RepositoryNotFoundError

    what = "base model" if repo_type == "model" else "dataset"
    try:
        info = api.repo_info(repo_id, repo_type=repo_type)
    except RepositoryNotFoundError:
        raise InputError(
            f"{what} {repo_id} is not on the Hub (or not visible with your token)",
            fix=f"publish it first, or pass the right id with --{what.replace(' ', '-')}-id",
        ) from None
    if override:
        return override.strip().lower()
    card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
    license_ = card.get("license")
    if isinstance(license_, list):
        license_ = license_[0] if license_ else None
    if not license_:
        raise InputError(f"the {what} {repo_id} declares no licence on its card",
                         fix=f"pass {flag} LICENSE_ID (e.g. apache-2.0) if you know it")
    return str(license_).lower()


def _stage_merged(run_dir: Path, base_source: str, stage: Path) -> None:
    from pathinsight_models.training.artifacts import merge_adapter

    with tempfile.TemporaryDirectory(prefix="pathinsight-merge-") as tmp:
        merged = merge_adapter(run_dir, Path(tmp), base_model=base_source)
        for p in merged.iterdir():
            if p.is_file() and (p.suffix == ".safetensors" or p.name in MODEL_CONFIG_FILES):
                shutil.copy2(p, stage / p.name)
    if any(p.suffix in PICKLE_SUFFIXES for p in stage.iterdir()):
        raise InputError("merging produced pickled weights", fix="upgrade transformers (safetensors is the default)")


def prepare_model_folder(run_dir: str | os.PathLike[str], repo_id: str, stage: Path, **kwargs: Any) -> ModelPushResult:
    """Assemble (and check) in `stage` exactly what `push_model` uploads. Reads the Hub, writes nothing there.

    `offline=True` (e.g. the demo, before anything is published) skips the Hub checks that the base
    model and dataset exist; their licences must then be given. `stage` is written atomically and may
    replace only an earlier staging folder (never the run directory or a folder of the user's).
    """
    from pathenhanceds.atomic import OUTPUT_KINDS, atomic_output_dir, write_marker

    with atomic_output_dir(stage, overwrite=True, kind="push-stage", protected=[run_dir]) as tmp:
        write_marker(tmp, "push-stage")
        result = _stage_model_folder(run_dir, repo_id, tmp, **kwargs)
    result.files = [f for f in result.files if f != OUTPUT_KINDS.get("push-stage").marker]  # not uploaded
    return result


def _stage_model_folder(
    run_dir: str | os.PathLike[str],
    repo_id: str,
    stage: Path,
    *,
    results: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    merged: bool = False,
    base_model_id: str | None = None,
    dataset_id: str | None = None,
    base_license: str | None = None,
    dataset_license: str | None = None,
    token: str | None = None,
    api: Any = None,
    offline: bool = False,
    results_dataset_id: str | None = None,
    vision_model_id: str | None = None,
    language_model_id: str | None = None,
    vision_license: str | None = None,
    language_license: str | None = None,
) -> ModelPushResult:
    from .eval_results import EVAL_RESULTS_FILE, check_results, eval_results_yaml
    from .model_card import CardInfo, build_model_card, sanitize_recipe

    api = None if offline and api is None else hub_api(api, token)
    check_repo_id(repo_id)
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise InputError("run directory does not exist", file=run, fix="pass the output_dir of `pathinsight train`")
    from .clip import run_kind, stage_assembled, stage_clip

    kind = run_kind(run)  # CLIP dual encoders and assembled VLMs have their own cards (publish/clip.py)
    if kind != "sft":
        if merged:
            raise InputError(f"--merged applies to LoRA runs of `pathinsight train`, not to this {kind} model",
                             file=run, fix="drop --merged (the folder holds full weights)")
        if kind == "assembled":
            if results is not None:
                raise InputError("an assembled model is untrained: there are no results to publish",
                                 fix="train it (stage 1/2), evaluate the run and push that run with --results")
            return stage_assembled(run, repo_id, stage, vision_model_id=vision_model_id or base_model_id,
                                   language_model_id=language_model_id, vision_license=vision_license or base_license,
                                   language_license=language_license, token=token, api=api, offline=offline)
        clip_results = None
        if results is not None:
            clip_results = dict(results) if isinstance(results, Mapping) else _read_json(Path(results))
        return stage_clip(run, repo_id, stage, results=clip_results, base_model_id=base_model_id,
                          dataset_id=dataset_id, results_dataset_id=results_dataset_id, base_license=base_license,
                          dataset_license=dataset_license, token=token, api=api, offline=offline)
    adapter = (run / "adapter_config.json").is_file()
    if merged and not adapter:
        raise InputError("--merged needs a LoRA run (no adapter_config.json here)", file=run,
                         fix="drop --merged: full fine-tunes are pushed as full weights")
    if not adapter and not (run / "config.json").is_file():
        raise InputError("not a training output: neither adapter_config.json nor config.json", file=run,
                         fix="pass the output_dir of `pathinsight train`")
    weights = _weights(run, adapter)
    recipe = _read_yaml(run / "recipe.yaml")
    run_info = _read_json(run / "run_info.json") if (run / "run_info.json").is_file() else {}
    adapter_cfg = _read_json(run / "adapter_config.json") if adapter else {}

    results_obj: dict[str, Any] | None = None
    if results is not None:
        if isinstance(results, Mapping):
            results_obj = check_results(results)
        else:
            rpath = Path(results)
            results_obj = check_results(_read_json(rpath), str(rpath))

    lineage = run_info.get("lineage") or {}
    if adapter and not merged and lineage.get("start") == "stacked" and not base_model_id:
        raise InputError(
            "this adapter was trained on top of another adapter merged into the base (`--adapter`): it applies "
            "to those merged weights, which are not on the Hub",
            file=run,
            fix="publish it with --merged (one full model), or push the run's parent_merged/ folder first and "
                "pass its id with --base-model-id",
        )
    base, base_local = _base_model_id(base_model_id, recipe, adapter_cfg, run_info)
    data_id = _dataset_id(dataset_id, recipe, results_obj)
    if offline:
        if not (base_license and dataset_license):
            raise InputError("offline staging needs base_license and dataset_license",
                             fix="pass both licences (nothing is read from the Hub offline)")
        base_lic, data_lic = base_license.strip().lower(), dataset_license.strip().lower()
    else:
        base_lic = _hub_license(api, base, "model", base_license, "--base-license")
        data_lic = _hub_license(api, data_id, "dataset", dataset_license, "--dataset-license")

    stage.mkdir(parents=True, exist_ok=True)
    weight_type = "Original"
    if adapter and merged:
        weight_type = "Merged"
        # A stacked adapter applies to the merged parent its adapter_config.json names (run/parent_merged).
        stacked = lineage.get("start") == "stacked" and adapter_cfg.get("base_model_name_or_path")
        _stage_merged(run, stacked or base_local or base, stage)
    elif adapter:
        weight_type = "Adapter"
        adapter_cfg["base_model_name_or_path"] = base
        (stage / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2) + "\n", encoding="utf-8")
        for w in weights:
            shutil.copy2(w, stage / w.name)
    else:
        for w in weights:
            shutil.copy2(w, stage / w.name)
        for name in MODEL_CONFIG_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, stage / name)

    processor = [n for n in PROCESSOR_FILES if (run / n).is_file()]
    if not any(n in processor for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise InputError("the run directory has no processor / tokenizer files", file=run,
                         fix="save the processor next to the weights (`processor.save_pretrained(run_dir)`)")
    for name in processor:
        shutil.copy2(run / name, stage / name)

    published_recipe = sanitize_recipe(recipe, base, data_id, lineage) if recipe else {}
    if published_recipe:
        (stage / "recipe.yaml").write_text(yaml.safe_dump(published_recipe, sort_keys=True), encoding="utf-8")
    info = CardInfo(
        repo_id=repo_id,
        base_model=base,
        weight_type=weight_type,
        base_license=base_lic,
        dataset_ids=[data_id],
        dataset_license=data_lic,
        recipe=published_recipe,
        run_info={k: v for k, v in run_info.items() if k not in ("base_model", "lineage")},
        results=results_obj,
        parents=[p for p in (lineage.get("parent"),) if p and is_hub_id(p) and lineage.get("start") != "model"],
    )
    build_model_card(info).save(stage / "README.md")
    if results_obj is not None:
        target = stage / EVAL_RESULTS_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(eval_results_yaml(results_obj, data_id), encoding="utf-8")

    local = [str(run.resolve())] + [p for p in (base_local, recipe.get("dataset_name"), recipe.get("output_dir"))
                                    if p and is_local_path(p)]
    check_publishable(stage, token=token, extra_paths=local)
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    return ModelPushResult(repo_id, None, weight_type, base, info.license, files)


def push_model(
    run_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    results: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    merged: bool = False,
    base_model_id: str | None = None,
    dataset_id: str | None = None,
    base_license: str | None = None,
    dataset_license: str | None = None,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    results_dataset_id: str | None = None,
    vision_model_id: str | None = None,
    language_model_id: str | None = None,
    vision_license: str | None = None,
    language_license: str | None = None,
) -> ModelPushResult:
    """Publish a `pathinsight train` output directory to the model repo `repo_id` in one commit.

    Files of an earlier push that this one no longer has are deleted in the same commit, so switching
    a repo from adapter to merged weights never leaves a stale `adapter_config.json` behind. CLIP models
    (`clip train`/`convert`/`tiny` folders, results from `clip eval`) and assembled VLMs (`models assemble`,
    parents from `vision_model_id`/`language_model_id` or `assembly.json`) get their own cards (`publish/clip.py`).
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, get_token
    from huggingface_hub.errors import HfHubHTTPError

    check_repo_id(repo_id)
    token = token or get_token()
    if not token:
        raise InputError("no Hugging Face token found",
                         fix="run `hf auth login` or set HF_TOKEN to a token with write access")
    api = hub_api(token=token)
    branch = revision or "main"
    with tempfile.TemporaryDirectory(prefix="pathinsight-push-") as tmp:
        stage = Path(tmp) / "repo"
        result = prepare_model_folder(
            run_dir, repo_id, stage, results=results, merged=merged, base_model_id=base_model_id,
            dataset_id=dataset_id, base_license=base_license, dataset_license=dataset_license, token=token, api=api,
            results_dataset_id=results_dataset_id, vision_model_id=vision_model_id,
            language_model_id=language_model_id, vision_license=vision_license, language_license=language_license,
        )
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            if branch != "main":
                api.create_branch(repo_id, branch=branch, exist_ok=True)
            head = api.repo_info(repo_id, revision=branch)
            remote = {s.rfilename for s in head.siblings or []}
            ops: list[CommitOperationAdd | CommitOperationDelete] = [
                CommitOperationAdd(rel, str(stage / rel)) for rel in result.files
            ]
            ops += [CommitOperationDelete(f) for f in sorted(remote - set(result.files) - {".gitattributes"})]
            message = commit_message or f"Upload {result.weight_type.lower()} weights of a {result.base_model} fine-tune"
            result.commit = api.create_commit(
                repo_id, ops, commit_message=message, revision=branch, parent_commit=head.sha
            )
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (401, 403):
                raise InputError(f"the Hub refused the request ({status}) for model repo {repo_id}",
                                 fix="use a token with write access to the namespace (`hf auth login`)") from None
            raise
    return result
