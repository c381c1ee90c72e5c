"""Contrastive training of `transformers` `CLIPModel` / `SiglipModel` on PathEnhanceDS image-text pairs.

Built on `transformers.Trainer`: arguments are `ClipArguments` (ours) + `TrainingArguments`, parsed by
`HfArgumentParser` from a YAML file, a mapping and/or command-line options. The loss is the model's
own (`return_loss=True`): CLIP's symmetric InfoNCE, SigLIP's pairwise sigmoid loss.

Switches: `method` full or lora (PEFT LoRA on the attention and MLP linears of the unlocked towers;
logit scale/bias stay fixed under LoRA), `lock_image_tower` / `lock_text_tower` (LiT: "locked image,
tuned text"), `lock_logit_scale`, `siglip_init` (reset SigLIP's logit scale/bias to the SigLIP paper's
t=10, b=-10 before training; needed for randomly initialised SigLIP, which otherwise stays at chance).
An open_clip plain-ViT model (`hf-hub:` or a directory with open_clip_config.json) is converted to
`transformers` CLIP first (see `pathinsight_models.clip.open_clip`).

Outputs in `output_dir`: full weights (LoRA is merged; the adapter is kept under `adapter/`),
processor, `metrics.jsonl`, `loss.png`, `run_info.json`, `clip_args.json` and a model card
(README.md). Resumable from the last `checkpoint-*` with `resume`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError

logger = logging.getLogger("pathinsight.clip")

_TOWER_PREFIXES = {"image": ("vision_model", "visual_projection"), "text": ("text_model", "text_projection")}
_LORA_LEAVES = r"(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.(?:fc1|fc2))"


@dataclass
class ClipArguments:
    """Our fields of `pathinsight clip train` (the rest are `transformers.TrainingArguments`)."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "transformers CLIP/SigLIP dir or id, or an open_clip plain ViT (hf-hub:ORG/NAME or a local dir)"})
    dataset_name: str | None = field(default=None, metadata={"help": "PathEnhanceDS directory or Hub id"})
    dataset_config: str = field(default="captioning", metadata={"help": "captioning or all"})
    dataset_train_split: str = "train"
    dataset_test_split: str | None = field(default=None, metadata={"help": "split for eval loss (e.g. validation)"})
    class_captions: bool = field(default=False, metadata={
        "help": "add captions naming the class of classification rows (template pool; never the test split)"})
    max_train_samples: int | None = None
    method: str = field(default="full", metadata={"help": "full or lora"})
    lock_image_tower: bool = field(default=False, metadata={"help": "freeze the vision tower (LiT)"})
    lock_text_tower: bool = field(default=False, metadata={"help": "freeze the text tower"})
    lock_logit_scale: bool = field(default=False, metadata={"help": "freeze logit scale (and SigLIP bias)"})
    siglip_init: bool = field(default=False, metadata={
        "help": "reset SigLIP logit scale/bias to the paper's t=10, b=-10 (for random-init SigLIP)"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace output_dir if it holds an earlier `clip train` run (never any other folder)"})

    def __post_init__(self) -> None:
        if self.method not in ("full", "lora"):
            raise InputError(f"unknown method {self.method!r}", fix="use full or lora")
        if self.lock_image_tower and self.lock_text_tower and self.method == "lora":
            raise InputError("LoRA with both towers locked trains nothing", fix="unlock one tower")


def _parser() -> Any:
    from transformers import HfArgumentParser, TrainingArguments

    return HfArgumentParser((ClipArguments, TrainingArguments))


def _given_keys(cli_args: Sequence[str]) -> set[str]:
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in cli_args if a.startswith("--")}


def parse_clip_args(
    config: str | Path | Mapping[str, Any] | None = None,
    cli_args: Sequence[str] = (),
    **overrides: Any,
) -> tuple[ClipArguments, Any]:
    """(`ClipArguments`, `TrainingArguments`) from a YAML file / mapping, keyword overrides and CLI options
    (later wins). `report_to` defaults to none and `remove_unused_columns` is always False."""
    import yaml

    values: dict[str, Any] = {}
    if isinstance(config, str | Path):
        try:
            values = dict(yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read the config: {exc}", file=config) from exc
    elif config is not None:
        values = dict(config)
    values.update(overrides)
    parser = _parser()
    if cli_args:
        try:
            parsed = parser.parse_args_into_dataclasses(args=list(cli_args))
        except (SystemExit, ValueError) as exc:  # argparse exits on bad values; unknown options are a ValueError
            raise InputError(f"bad command-line options: {exc if isinstance(exc, ValueError) else ' '.join(cli_args)}",
                             fix="see `pathinsight clip train --help` (ClipArguments + TrainingArguments fields)") from exc
        given = _given_keys(cli_args)
        for obj in parsed:
            for f in fields(obj):
                if f.name in given:
                    values[f.name] = getattr(obj, f.name)
    values.setdefault("report_to", "none")
    values["remove_unused_columns"] = False  # the collator needs the image and text columns
    try:
        clip_args, train_args = parser.parse_dict(values, allow_extra_keys=False)
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad training arguments: {exc}", fix="see `pathinsight clip train --help`") from exc
    for name in ("model_name_or_path", "dataset_name"):
        if not getattr(clip_args, name):
            raise InputError(f"{name} is required", fix=f"pass --{name}")
    return clip_args, train_args


# ------------------------------------------------------------------------------------------ pieces


class ClipCollator:
    """Images + texts -> `pixel_values`, `input_ids` (+ mask for CLIP), `return_loss=True`."""

    def __init__(self, processor: Any, siglip: bool, max_length: int | None):
        self.processor, self.siglip, self.max_length = processor, siglip, max_length

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        pixels = self.processor.image_processor(images=[b["image"] for b in batch], return_tensors="pt")
        tokens = self.processor.tokenizer([b["text"] for b in batch], truncation=True, return_tensors="pt",
                                          padding="max_length" if self.siglip else True, max_length=self.max_length)
        out = {"pixel_values": pixels["pixel_values"], "input_ids": tokens["input_ids"], "return_loss": True}
        if not self.siglip:  # SigLIP pools the last position and was trained without a text mask
            out["attention_mask"] = tokens["attention_mask"]
        return out


def is_siglip(model: Any) -> bool:
    """SigLIP / SigLIP2 models (sigmoid loss, last-token text pooling)."""
    return str(getattr(model.config, "model_type", "")).startswith("siglip")


def apply_locks(model: Any, args: ClipArguments) -> None:
    """Freeze locked towers (and the logit scale/bias when asked)."""
    locked = [p for tower, on in (("image", args.lock_image_tower), ("text", args.lock_text_tower)) if on
              for p in _TOWER_PREFIXES[tower]]
    for name, param in model.named_parameters():
        if any(name == p or name.startswith(p + ".") for p in locked):
            param.requires_grad_(False)
        if args.lock_logit_scale and name in ("logit_scale", "logit_bias"):
            param.requires_grad_(False)


def lora_config(model: Any, args: ClipArguments) -> Any:
    """PEFT LoRA on the unlocked towers' attention and MLP linears; CLIP projections trained fully."""
    from peft import LoraConfig

    towers = [t for t, locked in (("vision_model", args.lock_image_tower), ("text_model", args.lock_text_tower))
              if not locked]
    regex = rf"^(?:{'|'.join(towers)})\.encoder\.layers\.\d+\.{_LORA_LEAVES}$"
    save = [p for tower, locked in (("image", args.lock_image_tower), ("text", args.lock_text_tower)) if not locked
            for p in _TOWER_PREFIXES[tower][1:] if hasattr(model, p)]
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=regex, modules_to_save=save or None)


def trainable_counts(model: Any) -> dict[str, dict[str, int]]:
    """Trainable / total parameters per part (image tower, text tower, other)."""
    out: dict[str, dict[str, int]] = {}
    for name, param in model.named_parameters():
        bare = name.replace("base_model.model.", "")
        part = next((t for t, prefixes in _TOWER_PREFIXES.items()
                     if any(bare == p or bare.startswith(p + ".") for p in prefixes)), "other")
        counts = out.setdefault(part, {"trainable": 0, "total": 0})
        counts["total"] += param.numel()
        counts["trainable"] += param.numel() if param.requires_grad else 0
    return out


def _resolve_base(name: str, out: Path) -> str:
    from pathinsight_models.clip.zeroshot import is_open_clip

    if not is_open_clip(name):
        return name
    from pathinsight_models.clip.open_clip import convert_open_clip

    target = out / "converted_base"
    if not (target / "config.json").is_file():
        convert_open_clip(name, target)
    logger.info("converted open_clip model %s to transformers CLIP at %s", name, target)
    return str(target)


def prepare_output(out: Path, clip_args: ClipArguments, train_args: Any) -> None:
    """Guard and mark `output_dir` before training (main process only).

    Training writes in place, not beside the target: checkpoints must survive a crash for `resume`. So the
    marker (`run_info.json`, status `running`) is written first, and a new run may only use a new or empty
    folder or, with `overwrite`, replace an earlier `clip train` run (`pathenhanceds.atomic`); never the
    base model or the dataset. `resume` continues only a folder that is a `clip train` run.
    """
    import shutil

    from pathenhanceds.atomic import OUTPUT_KINDS, check_output, write_marker
    from pathinsight_models.clip.zeroshot import local_inputs

    if getattr(train_args, "process_index", 0) != 0:
        return
    protected = local_inputs(clip_args.model_name_or_path, clip_args.dataset_name)
    if clip_args.resume:
        check_output(out, overwrite=True, kind="clip-train", protected=protected)  # ours, and not an input
        return
    target = check_output(out, overwrite=clip_args.overwrite, kind="clip-train", protected=protected)
    if target.exists():
        if OUTPUT_KINDS.get("clip-train").recognise(target):  # an earlier run of ours (check_output said so)
            shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    write_marker(target, "clip-train", status="running", base_model=clip_args.model_name_or_path)


# ------------------------------------------------------------------------------------------ train


def train_clip(
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    callbacks: Sequence[Any] | None = None,
    cli_args: Sequence[str] = (),
    **overrides: Any,
) -> Path:
    """Train a CLIP/SigLIP contrastively as configured; returns `output_dir` (loads with AutoModel/AutoProcessor)."""
    clip_args, train_args = parse_clip_args(config, cli_args, **overrides)
    return run(clip_args, train_args, callbacks=callbacks)


def run(clip_args: ClipArguments, train_args: Any, callbacks: Sequence[Any] | None = None) -> Path:
    """Run parsed arguments; see `train_clip`."""
    from transformers import AutoModel, AutoProcessor, Trainer, set_seed

    from pathenhanceds.atomic import marker_fields
    from pathinsight_models.clip.data import load_pairs
    from pathinsight_models.training.artifacts import plot_loss, resume_checkpoint, write_metrics

    started = time.time()
    out = Path(train_args.output_dir)
    last_checkpoint = resume_checkpoint(out) if clip_args.resume else None
    prepare_output(out, clip_args, train_args)
    set_seed(train_args.seed)
    base = _resolve_base(clip_args.model_name_or_path, out)
    try:
        model = AutoModel.from_pretrained(base)
        processor = AutoProcessor.from_pretrained(base)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the model: {exc}", file=base) from exc
    if not hasattr(model, "get_image_features"):
        raise InputError(f"{type(model).__name__} is not a CLIP-style dual encoder", file=base,
                         fix="use a CLIPModel or SiglipModel checkpoint")
    siglip = is_siglip(model)
    if clip_args.siglip_init:
        if not siglip:
            raise InputError("siglip_init applies to SigLIP models only", fix="drop --siglip_init")
        import torch

        from pathinsight_models.clip.tiny import SIGLIP_INIT_BIAS, SIGLIP_INIT_SCALE

        with torch.no_grad():
            model.logit_scale.fill_(SIGLIP_INIT_SCALE)
            model.logit_bias.fill_(SIGLIP_INIT_BIAS)
    apply_locks(model, clip_args)
    if clip_args.method == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(model, clip_args))
    train_ds = load_pairs(clip_args.dataset_name, clip_args.dataset_config, clip_args.dataset_train_split,
                          class_captions=clip_args.class_captions, seed=train_args.seed,
                          max_samples=clip_args.max_train_samples)
    eval_ds = None
    if clip_args.dataset_test_split:
        eval_ds = load_pairs(clip_args.dataset_name, clip_args.dataset_config, clip_args.dataset_test_split,
                             class_captions=clip_args.class_captions and clip_args.dataset_test_split != "test",
                             seed=train_args.seed)
    text_config = getattr(model.config, "text_config", None)
    collator = ClipCollator(processor, siglip, getattr(text_config, "max_position_embeddings", None))
    counts = trainable_counts(model)
    for part, c in counts.items():
        logger.info("%-6s trainable %d / %d parameters", part, c["trainable"], c["total"])
    trainer = Trainer(model=model, args=train_args, train_dataset=train_ds, eval_dataset=eval_ds,
                      data_collator=collator, callbacks=list(callbacks or []))
    result = trainer.train(resume_from_checkpoint=last_checkpoint)
    if trainer.is_world_process_zero():
        final = trainer.model
        if clip_args.method == "lora":
            final.save_pretrained(str(out / "adapter"))
            final = final.merge_and_unload()
        final.save_pretrained(str(out))
        processor.save_pretrained(str(out))
        trainer.save_state()
        write_metrics(trainer.state.log_history, out)
        plot_loss(trainer.state.log_history, out)
        (out / "clip_args.json").write_text(json.dumps(asdict(clip_args), indent=2), encoding="utf-8")
        info = {**marker_fields("clip-train"), "status": "finished",
                "base_model": clip_args.model_name_or_path, "model_type": model.config.model_type,
                "method": clip_args.method, "global_step": trainer.state.global_step,
                "pairs": {"train": train_ds.counts(), "eval": eval_ds.counts() if eval_ds else {}},
                "trainable_parameters": counts, "train_loss": result.metrics.get("train_loss"),
                "seconds": round(time.time() - started, 1)}
        (out / "run_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        (out / "README.md").write_text(model_card(clip_args, train_args, info), encoding="utf-8")
    trainer.accelerator.wait_for_everyone()
    return out


def model_card(clip_args: ClipArguments, train_args: Any, info: dict[str, Any]) -> str:
    """A Hub model card for the trained dual encoder (zero-shot image classification)."""
    import yaml

    base = clip_args.model_name_or_path or ""
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "zero-shot-image-classification",
                            "tags": ["pathology", "histopathology", "clip", "pathinsight"]}
    if base and not Path(base).exists() and not base.startswith("local-dir:"):
        meta["base_model"] = base.removeprefix("hf-hub:")
    if clip_args.dataset_name and not Path(clip_args.dataset_name).exists():
        meta["datasets"] = [clip_args.dataset_name]
    locks = [name for name, on in (("image tower", clip_args.lock_image_tower),
                                   ("text tower", clip_args.lock_text_tower)) if on]
    loss = "sigmoid (SigLIP)" if info["model_type"].startswith("siglip") else "contrastive InfoNCE (CLIP)"
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n"
        f"# {Path(str(train_args.output_dir)).name}\n\n"
        f"A {info['model_type']} dual encoder adapted to histopathology with PathInsight "
        f"(`pathinsight clip train`), {loss} loss.\n\n"
        f"- Base model: `{base}`\n- Data: `{clip_args.dataset_name}` (config `{clip_args.dataset_config}`, "
        f"split `{clip_args.dataset_train_split}`), pairs {info['pairs']['train']}\n"
        f"- Method: {clip_args.method}; locked: {', '.join(locks) or 'nothing'}\n"
        f"- Steps: {info['global_step']}, learning rate {train_args.learning_rate}, "
        f"batch size {train_args.per_device_train_batch_size}, seed {train_args.seed}; final train loss "
        f"{info['train_loss']}\n\n"
        "## Use\n\n```python\nfrom transformers import AutoModel, AutoProcessor\n"
        "model = AutoModel.from_pretrained(PATH)\nprocessor = AutoProcessor.from_pretrained(PATH)\n```\n\n"
        "Zero-shot evaluation: `pathinsight clip eval --model PATH --data PathEnhanceDS --tasks crc100k,pcam "
        "--output results/`.\n"
    )
