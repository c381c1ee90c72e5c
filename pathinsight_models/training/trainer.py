"""Wiring: recipe -> model, processor, data, PEFT -> TRL `SFTTrainer` -> output directory."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathinsight_models.families import Family, detect_family, get_family
from pathinsight_models.training.continuing import StartingPoint
from pathinsight_models.training.recipe import Recipe, RecipeArguments, load_recipe

logger = logging.getLogger("pathinsight.training")


def train(
    recipe: str | Path | Mapping[str, Any] | Recipe | None = None,
    *,
    callbacks: Sequence[Any] | None = None,
    cli_args: Sequence[str] = (),
    **overrides: Any,
) -> Path:
    """Fine-tune a VLM as the recipe says and return its output directory.

    `recipe` is a YAML path, a mapping of recipe fields or a `Recipe`; keyword `overrides` and
    `cli_args` (`["--learning_rate", "1e-5"]`) win over it. `callbacks` are extra
    `transformers.TrainerCallback`s (e.g. task metrics during training).
    """
    resolved = recipe if isinstance(recipe, Recipe) and not overrides and not cli_args else load_recipe(
        recipe, overrides, cli_args
    )
    return run(resolved, callbacks=callbacks)


# ------------------------------------------------------------------------------------------ loading


def resolve_family(model_id: str, revision: str | None, family: str | None = None,
                   trust: bool = False) -> tuple[Family, Any]:
    """(family, model config) from the recipe or the model config; refuses remote code unless allowed."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=trust)
    except ValueError as exc:
        if "trust_remote_code" in str(exc) and not trust:
            raise InputError(
                f"{model_id} needs custom code from its repository (trust_remote_code)",
                fix="use a native transformers VLM (Qwen2/2.5-VL and InternVL-hf stand in for remote-code "
                "models), or set `trust_remote_code: true` in the recipe if you trust that code",
            ) from exc
        raise InputError(f"cannot read the model config: {exc}", file=model_id) from exc
    except OSError as exc:
        raise InputError(f"cannot find the model: {exc}", file=model_id,
                         fix="check model_name_or_path (a local directory, a Hub id, or a LoRA adapter)") from exc
    return (get_family(family) if family else detect_family(config)), config


def load_processor(args: RecipeArguments, family: Family, trust_remote_code: bool,
                   sources: list[tuple[str, str | None]]) -> Any:
    """The training processor (first of `sources` that has one), with the family's settings and chat template."""
    from pathinsight_models.training.continuing import load_processor_from

    settings = args.processor_kwargs
    if settings == "family":
        settings = dict(family.processor_settings)
    settings = dict(settings or {})
    processor = load_processor_from(sources, settings, trust_remote_code)
    image_processor = getattr(processor, "image_processor", None)
    unknown = [k for k in settings if not (hasattr(image_processor, k) or hasattr(processor, k))]
    if unknown:
        raise InputError(f"processor_kwargs not understood by {type(processor).__name__}: {unknown}",
                         fix="use attributes of the model's image processor (see preprocessor_config.json)")
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:  # padding a batch needs one; eos is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    return processor


def training_chat_template(processor: Any, family: Family) -> str:
    """A template with `{% generation %}` markers whose masks include each turn's end-of-turn token.

    Candidates, in order: the checkpoint's own template if it has markers; TRL's training version of
    a known original template; the family's template. The first whose end-of-turn token is learned
    wins (llava-hf's template, for one, marks the answer but not `</s>`, so a model trained on it
    never learns to stop). Switching away from the checkpoint's template is logged.
    """
    from trl.chat_template_utils import (
        get_training_chat_template,
        has_generation_markers,
        is_chat_template_stop_token_trained,
    )

    current = processor.chat_template
    if isinstance(current, dict):
        current = current.get("default")
    candidates: list[tuple[str, str]] = []
    if current and has_generation_markers(current):
        candidates.append(("the model's own", current))
    elif current:
        try:
            patched = get_training_chat_template(processor)
        except ValueError:
            patched = None
        if patched:
            candidates.append(("TRL's training version of the model's", patched))
    fallback = f"the {family.name} family"
    candidates.append((fallback, family.chat_template))
    for label, template in candidates:
        if is_chat_template_stop_token_trained(processor, chat_template=template):
            if label == fallback:
                logger.warning("training with %s chat template (saved with the outputs)", label)
            return template
    logger.warning("no chat template trains the end-of-turn token; the model may not learn to stop")
    return candidates[0][1]


def resolve_dtype(recipe: Recipe) -> Any:
    """The training dtype: the recipe's (`auto` = the checkpoint's), else bf16/fp16 for LoRA per the SFT config,
    else float32."""
    import torch

    args, sft, dtype = recipe.args, recipe.sft, recipe.model.dtype
    if dtype == "auto":
        return "auto"
    if dtype is not None:
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise InputError(f"unknown dtype {dtype!r}", fix="auto, bfloat16, float16 or float32")
        return value
    if args.uses_lora and sft.bf16:
        return torch.bfloat16  # frozen base weights need no fp32 master copy
    if args.uses_lora and sft.fp16:
        return torch.float16
    return torch.float32  # full fine-tuning keeps fp32 master weights; bf16/fp16 is autocast


def load_model(recipe: Recipe, family: Family, trust_remote_code: bool, point: StartingPoint) -> Any:
    """The model to train: the starting point's base (dtype, revision, attention, QLoRA quantisation per
    the recipe), wrapped in the continued adapter (b) or with the stacked-on adapter merged in (c)."""
    from transformers import AutoModelForImageTextToText

    from pathinsight_models.training.continuing import apply_adapter

    args, sft = recipe.args, recipe.sft
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(recipe),
        "revision": point.base_revision,
        "trust_remote_code": trust_remote_code,
    }
    if recipe.model.attn_implementation:
        kwargs["attn_implementation"] = recipe.model.attn_implementation
    if args.method == "qlora":
        kwargs.update(qlora_kwargs(recipe, family))
    model = AutoModelForImageTextToText.from_pretrained(point.base, **kwargs)
    if args.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=bool(sft.gradient_checkpointing),
            gradient_checkpointing_kwargs=sft.gradient_checkpointing_kwargs,
        )
    model = apply_adapter(model, point)
    if recipe.script.ignore_bias_buffers:  # TRL's DDP work-around for boolean mask buffers
        import torch

        model._ddp_params_and_buffers_to_ignore = [n for n, b in model.named_buffers() if b.dtype == torch.bool]
    return model


def qlora_kwargs(recipe: Recipe, family: Family) -> dict[str, Any]:
    """4-bit NF4 base weights (QLoRA); the projector and lm_head stay in full precision."""
    import importlib.util

    import torch
    from accelerate import PartialState
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise InputError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); none is visible",
                         fix="use method: lora (or full) on this machine, or run on a GPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise InputError("QLoRA needs the bitsandbytes package", fix="pip install bitsandbytes")
    model_args, sft = recipe.model, recipe.sft
    compute = torch.bfloat16 if sft.bf16 else torch.float16
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=model_args.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=model_args.use_bnb_nested_quant,
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_quant_storage=model_args.bnb_4bit_quant_storage or compute,
            llm_int8_skip_modules=["lm_head", *family.projector],
        ),
        "device_map": {"": PartialState().local_process_index},
    }


def load_data(
    recipe: Recipe, processor: Any, chat_template: str, extras: dict[str, Any] | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """Train (and eval) splits with over-long rows dropped, and the data report.

    One pass per split measures every example; with `group_by_length` the train lengths, with
    `pretokenize` every split's text features (and processed images, within `pixel_cache_mb`) land
    in `extras` ("train_lengths", "cache"). A split whose images are all cached is handed to the
    trainer with undecoded image bytes: batches then never decode them.
    """
    from pathinsight_models.training.collator import ExampleCache
    from pathinsight_models.training.data import (
        grouping_keys,
        load_split,
        prepare_split,
        without_image_decoding,
    )

    args, script = recipe.args, recipe.script
    cache = ExampleCache() if args.pretokenize else None

    def prepare(dataset: Any, desc: str, measure: bool) -> tuple[Any, list[dict[str, Any]], Any]:
        prepared = prepare_split(dataset, processor, chat_template, recipe.max_length, desc, measure=measure,
                                 keep_features=args.pretokenize, assistant_masks=bool(recipe.sft.assistant_only_loss),
                                 pixel_budget_mb=args.pixel_cache_mb)
        kept = prepared.dataset
        if cache is not None and prepared.ids is not None and prepared.features is not None:
            cache.add(prepared.ids, prepared.features, prepared.pixels)
            if prepared.pixels is not None and cache.has_pixels(prepared.ids):
                kept = without_image_decoding(kept)  # batches take the cached pixels
        keys = None if prepared.lengths is None else grouping_keys(
            prepared.lengths, prepared.answer_lengths, args.answer_bucket_tokens)
        return kept, prepared.dropped, keys

    train_ds = load_split(script.dataset_name, script.dataset_config, script.dataset_train_split)
    if args.max_train_samples is not None:
        train_ds = train_ds.select(range(min(args.max_train_samples, len(train_ds))))
    train_total = len(train_ds)
    train_ds, dropped_train, train_lengths = prepare(train_ds, "train", args.group_by_length)
    report: dict[str, Any] = {
        "max_length": recipe.max_length,
        "train": {"total": train_total, "kept": len(train_ds), "dropped": len(dropped_train),
                  "dropped_examples": dropped_train},
    }
    eval_ds = None
    if recipe.sft.eval_strategy != "no":  # TRL's rule: the test split is read when the run evaluates
        eval_ds = load_split(script.dataset_name, script.dataset_config, script.dataset_test_split)
        eval_total = len(eval_ds)
        eval_ds, dropped_eval, _ = prepare(eval_ds, "eval", False)
        report["eval"] = {"total": eval_total, "kept": len(eval_ds), "dropped": len(dropped_eval),
                          "dropped_examples": dropped_eval}
    if extras is not None:
        extras["train_lengths"] = train_lengths
        extras["cache"] = cache if cache else None
    return train_ds, eval_ds, report


# ------------------------------------------------------------------------------------------ trainer


def _trainer_class() -> type:
    from trl import SFTTrainer

    from pathinsight_models.training.params import param_groups

    class PathInsightSFTTrainer(SFTTrainer):
        """`SFTTrainer` with one optimizer parameter group per component (own learning rate), length-grouped
        training batches when lengths are given, and the row `id` kept for the pre-tokenized collator."""

        def __init__(self, *args: Any, family: Family, component_lrs: dict[str, float],
                     train_lengths: Sequence[int] | None = None, **kwargs: Any):
            self._family = family
            self._component_lrs = component_lrs
            self._train_lengths = list(train_lengths) if train_lengths is not None else None
            super().__init__(*args, **kwargs)

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if "id" not in self._signature_columns:  # the collator's cache key
                self._signature_columns = [*self._signature_columns, "id"]

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            # Only replaces the default random order; an explicit train_sampling_strategy wins.
            dataset = self.train_dataset if train_dataset is None else train_dataset
            lengths = self._train_lengths
            if (lengths is not None and self.args.train_sampling_strategy == "random"
                    and hasattr(dataset, "__len__") and len(dataset) == len(lengths)):
                from pathinsight_models.training.data import length_grouped_sampler

                seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
                return length_grouped_sampler(
                    lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps, seed)
            return super()._get_train_sampler(train_dataset)

        def create_optimizer(self, model: Any = None) -> Any:
            if self.optimizer is None:
                opt_model = self.model if model is None else model
                decay = set(self.get_decay_parameter_names(opt_model))
                groups = param_groups(opt_model, self._family, self._component_lrs, self.args.weight_decay, decay)
                optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            return self.optimizer

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            # transformers logs only the first group's rate; add each component's.
            if "learning_rate" in logs and self.optimizer is not None:
                for group in self.optimizer.param_groups:
                    if "name" in group:
                        logs[f"learning_rate/{group['name']}"] = group["lr"]
            super().log(logs, *args, **kwargs)

    return PathInsightSFTTrainer


def _warn_ignored_lora_settings(recipe: Recipe) -> None:
    ignored = sorted(k for k in recipe.given if k in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
                                                        "lora_targets", "use_rslora", "use_dora"))
    if ignored:
        logger.warning("continuing an adapter: it keeps its own LoRA settings; ignored %s", ", ".join(ignored))


def run(recipe: Recipe, callbacks: Sequence[Any] | None = None) -> Path:
    """Run a resolved recipe; see `train`."""
    import torch
    from transformers import set_seed

    from pathinsight_models.training.artifacts import resume_checkpoint
    from pathinsight_models.training.collator import VisionChatCollator
    from pathinsight_models.training.continuing import (
        PARENT_DIR,
        lineage,
        pin_recipe_revisions,
        resolve_starting_point,
        save_merged_parent,
    )
    from pathinsight_models.training.params import (
        build_lora_config,
        component_lrs,
        freeze_for_full,
        trainable_summary,
    )

    args, sft = recipe.args, recipe.sft
    trust = bool(sft.trust_remote_code)
    out = Path(sft.output_dir)
    last_checkpoint = resume_checkpoint(out) if args.resume else None
    if args.method == "qlora" and not torch.cuda.is_available():
        raise InputError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); none is visible",
                         fix="use method: lora (or full) on this machine, or run on a GPU")

    started = time.time()
    set_seed(sft.seed)
    point = resolve_starting_point(recipe.model.model_name_or_path, recipe.model.model_revision, args.adapter,
                                   args.adapter_revision, args.method)
    family, base_config = resolve_family(point.base, point.base_revision, args.family, trust)
    processor = load_processor(args, family, trust, point.processor_sources)
    chat_template = training_chat_template(processor, family)
    processor.chat_template = chat_template  # saved with the outputs; renders like the original
    extras: dict[str, Any] = {}
    train_ds, eval_ds, data_report = load_data(recipe, processor, chat_template, extras)

    model = load_model(recipe, family, trust, point)
    lineage_info = lineage(point, base_config)
    peft_config = None
    if point.continues_adapter:
        _warn_ignored_lora_settings(recipe)  # the continued adapter keeps its own rank and targets
    elif args.uses_lora:
        if point.kind == "stacked":  # the new adapter applies to the merged parent: save it, name it as base
            from accelerate import PartialState

            state = PartialState()
            parent = out / PARENT_DIR
            if state.is_main_process:
                save_merged_parent(model, processor, out)
            state.wait_for_everyone()
            model.name_or_path = str(parent.resolve())
            lineage_info["adapter_base"] = model.name_or_path
        peft_config = build_lora_config(model, family, args, recipe.model)
    else:
        freeze_for_full(model, family, args)
    pin_recipe_revisions(recipe, point, lineage_info)
    collator = VisionChatCollator(
        processor=processor,
        chat_template=chat_template,
        assistant_only_loss=sft.assistant_only_loss,
        pad_to_multiple_of=sft.pad_to_multiple_of,
        cache=extras["cache"],
    )
    if collator.cache is not None:  # exactness guard: both paths must build the same batch
        collator.check_cache([train_ds[i] for i in range(min(len(train_ds), 64))], sft.per_device_train_batch_size)
    trainer = _trainer_class()(
        model=model,
        args=sft,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=processor,
        data_collator=collator,
        peft_config=peft_config,
        callbacks=list(callbacks or []),
        family=family,
        component_lrs=component_lrs(args, sft.learning_rate),
        train_lengths=extras["train_lengths"],
    )
    if args.eval_tasks:
        from pathinsight_models.evaluation.callback import TaskMetricsCallback

        # First in line, so reporting integrations (TensorBoard, W&B) see the task metrics too.
        trainer.callback_handler.callbacks.insert(0, TaskMetricsCallback(
            args.eval_tasks, recipe.script.dataset_name, processor, every_n_steps=args.eval_tasks_steps,
            limit=args.eval_tasks_limit, split=args.eval_tasks_split, seed=sft.seed,
        ))
    summary = trainable_summary(trainer.model, family)
    for component, counts in summary.items():
        logger.info("%-15s trainable %d / %d parameters", component, counts["trainable"], counts["total"])

    result = trainer.train(resume_from_checkpoint=last_checkpoint)
    trainer.save_model(str(out))  # adapter (+ modules_to_save) or full weights, safetensors; processor
    if trainer.is_world_process_zero():
        batching = {"group_by_length": extras["train_lengths"] is not None
                    and sft.train_sampling_strategy == "random",
                    "pretokenized": collator.cache is not None}
        _write_outputs(recipe, trainer, processor, out, family, summary, data_report, result, started, batching,
                       lineage_info)
    trainer.accelerator.wait_for_everyone()
    return out


def _write_outputs(
    recipe: Recipe,
    trainer: Any,
    processor: Any,
    out: Path,
    family: Family,
    summary: dict[str, Any],
    data_report: dict[str, Any],
    result: Any,
    started: float,
    batching: dict[str, bool] | None = None,
    lineage_info: dict[str, Any] | None = None,
) -> None:
    import peft
    import torch
    import transformers
    import trl

    from pathinsight_models.training.artifacts import plot_loss, write_metrics

    processor.save_pretrained(str(out))
    recipe.save(out / "recipe.yaml")
    trainer.save_state()
    trainer.save_metrics("train", result.metrics)
    write_metrics(trainer.state.log_history, out)
    plot_loss(trainer.state.log_history, out)
    (out / "data_report.json").write_text(json.dumps(data_report, indent=2), encoding="utf-8")
    info = {
        "family": family.name,
        "method": recipe.args.method,
        "stage": recipe.args.stage,
        # What the saved weights apply to / descend from (an adapter's original base, not the adapter).
        "base_model": (lineage_info or {}).get("base_model", recipe.model.model_name_or_path),
        "lineage": lineage_info or {},
        "global_step": trainer.state.global_step,
        "world_size": trainer.args.world_size,
        "trainable_parameters": summary,
        "dropped_examples": {split: rep["dropped"] for split, rep in data_report.items() if isinstance(rep, dict)},
        "batching": batching or {},
        "seconds": round(time.time() - started, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "trl": trl.__version__, "peft": peft.__version__},
    }
    (out / "run_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
