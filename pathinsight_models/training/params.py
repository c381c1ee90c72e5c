"""Which parameters learn, how (full / LoRA / modules_to_save) and at which learning rate."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pathenhanceds.errors import InputError
from pathinsight_models.families import COMPONENTS, Family, layout_free
from pathinsight_models.training.recipe import RecipeArguments

_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def _clean(name: str) -> str:
    for segment in _WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    return name


def tuned_components(args: RecipeArguments) -> dict[str, bool]:
    """Component -> trained? from the recipe's tune_* flags."""
    return {
        "vision_tower": bool(args.tune_vision_tower),
        "projector": bool(args.tune_projector),
        "language_model": bool(args.tune_language_model),
    }


def split_by_component(model: Any, family: Family) -> dict[str, list[tuple[str, Any]]]:
    """Named parameters per component; any parameter outside the family layout is an error."""
    groups: dict[str, list[tuple[str, Any]]] = {c: [] for c in COMPONENTS}
    unknown = []
    for name, param in model.named_parameters():
        component = family.component_of(_clean(name))
        if component is None:
            unknown.append(name)
        else:
            groups[component].append((name, param))
    if unknown:
        raise InputError(
            f"{len(unknown)} parameter(s) of the model are outside the {family.name!r} layout, e.g. {unknown[:3]}",
            fix="the model does not match this family; set `family:` to the right one",
        )
    return groups


def freeze_for_full(model: Any, family: Family, args: RecipeArguments) -> None:
    """Full fine-tuning: a component learns iff its tune_* flag is set."""
    tuned = tuned_components(args)
    for component, params in split_by_component(model, family).items():
        for _, param in params:
            param.requires_grad_(tuned[component])


def lora_components(family: Family, args: RecipeArguments) -> tuple[str, ...]:
    """Components that get LoRA adapters; contradictions with the tune_* flags are errors."""
    tuned = tuned_components(args)
    if args.lora_targets == "auto":
        return tuple(c for c in ("vision_tower", "language_model") if tuned[c])
    chosen = family.lora_components(args.lora_targets)
    for component in ("vision_tower", "language_model"):
        if (component in chosen) != tuned[component]:
            raise InputError(
                f"lora_targets={args.lora_targets!r} {'adapts' if component in chosen else 'leaves out'} the "
                f"{component} but tune_{component}={tuned[component]}",
                fix="make lora_targets and the tune_* flags agree, or use lora_targets: auto",
            )
    if "projector" in chosen and not tuned["projector"]:
        raise InputError("lora_targets=all_linear adapts the projector but tune_projector is false",
                         fix="set tune_projector: true or pick lora_targets: vision_language")
    return chosen


def modules_to_save(model: Any, family: Family, args: RecipeArguments, lora_on: tuple[str, ...]) -> list[str]:
    """Projector modules trained fully (saved with the adapter) when tuned but not LoRA-adapted.

    Named without the `model.` prefix (PEFT matches them as suffixes), so the adapter also loads onto
    the bare `*Model` layout (`AutoModel.from_pretrained(adapter)`).
    """
    if not args.tune_projector or "projector" in lora_on:
        return []
    names = []
    for prefix in family.projector:
        try:
            model.get_submodule(prefix)
        except AttributeError:
            continue  # a bare parameter (llava_next's image_newline): PEFT cannot save it separately
        names.append(layout_free(prefix))
    if not names:
        raise InputError(f"family {family.name!r} has no projector module PEFT can train fully",
                         fix="use method: full, or set tune_projector: false")
    return names


def build_lora_config(model: Any, family: Family, args: RecipeArguments, model_args: Any) -> Any:
    """The PEFT `LoraConfig` for the family's LoRA scopes of the tuned components.

    `model_args` is TRL's `ModelConfig`: rank, alpha, dropout, rsLoRA/DoRA, explicit `lora_target_modules`
    (instead of our `lora_targets`), `lora_target_parameters`, extra `lora_modules_to_save`, task type.
    """
    from peft import LoraConfig

    lora_on = lora_components(family, args)
    explicit = model_args.lora_target_modules
    if explicit:  # TRL turns a single value into a string: a regex for PEFT, as in `trl sft`
        targets: Any = explicit if isinstance(explicit, str) else list(explicit)
    else:
        targets = family.lora_regex(lora_on)
    saved = modules_to_save(model, family, args, lora_on) + list(model_args.lora_modules_to_save or [])
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        target_parameters=model_args.lora_target_parameters,
        modules_to_save=saved or None,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
        bias="none",
        task_type=model_args.lora_task_type,
    )


def component_lrs(args: RecipeArguments, base_lr: float) -> dict[str, float]:
    """Component -> learning rate (the recipe's per-component rates, else `base_lr`)."""
    return {
        "vision_tower": base_lr if args.vision_lr is None else args.vision_lr,
        "projector": base_lr if args.projector_lr is None else args.projector_lr,
        "language_model": base_lr,
    }


def param_groups(
    model: Any, family: Family, lrs: dict[str, float], weight_decay: float, decay_names: set[str]
) -> list[dict[str, Any]]:
    """Optimizer groups per (component, weight decay) with the component's learning rate."""
    buckets: dict[tuple[str, bool], list[Any]] = defaultdict(list)
    for component, params in split_by_component(model, family).items():
        for name, param in params:
            if param.requires_grad:  # without weight decay one group per component is enough
                buckets[(component, weight_decay > 0 and name in decay_names)].append(param)
    groups = []
    for (component, decays), params in sorted(buckets.items()):
        groups.append({
            "params": params,
            "lr": lrs[component],
            "weight_decay": weight_decay if decays else 0.0,
            "name": f"{component}{'/no_decay' if weight_decay > 0 and not decays else ''}",
        })
    if not groups:
        raise InputError("no trainable parameters", fix="check the tune_* flags and LoRA targets")
    return groups


def trainable_summary(model: Any, family: Family) -> dict[str, dict[str, int]]:
    """Trainable / total parameter counts per component (logged and saved)."""
    out = {}
    for component, params in split_by_component(model, family).items():
        out[component] = {
            "trainable": sum(p.numel() for _, p in params if p.requires_grad),
            "total": sum(p.numel() for _, p in params),
        }
    return out
