"""Generation back-ends of `pathinsight eval --backend`: `hf` (transformers, default) and `vllm`.

Both decode the same prompts (`generation.render_prompts`: the processor's chat template) with the
same settings (greedy from the model's generation config: `generation.greedy_config`, the same
`max_new_tokens`, stop at its EOS ids, its repetition penalty) and hand their answers (special
tokens skipped, whitespace stripped) to the same parsers and metrics. vLLM is optional
(`pip install 'pathinsight[vllm]'`, CUDA GPU): it is imported only when chosen, and its numbers can
differ from transformers' where its kernels (paged attention, its own batching, bf16) change the
arg-max of a near tie.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pathenhanceds.errors import InputError
from pathenhanceds.registry import Registry

from .tasks import Item

VLLM_INSTALL = "pip install 'pathinsight[vllm]' (it brings its own torch: use a separate environment)"
VLLM_CHUNK = 512  # requests per `LLM.generate` call: vLLM batches inside; images decode chunk by chunk


@dataclass
class Engine:
    """A model loaded behind one back-end: its processor, provenance, and greedy generation."""

    backend: str
    processor: Any
    info: dict[str, Any]  # results.json `model`
    generate: Callable[..., list[str]]  # (items, *, max_new_tokens, batch_size, progress, desc) -> answers
    decoding: Callable[[int], dict[str, Any]]  # max_new_tokens -> results.json `decoding`
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Free what the back-end holds beyond the Python objects (temporary merged weights)."""
        for close in self.closers:
            close()


@dataclass(frozen=True)
class Backend:
    """A named back-end: `load(model, adapter, revision=, device=, dtype=) -> Engine`, `check()` before loading."""

    name: str
    description: str
    load: Callable[..., Engine]
    check: Callable[[], None] = lambda: None


BACKENDS: Registry[Backend] = Registry("generation back-end", fix="choose from: {names}")


def register_backend(backend: Backend) -> Backend:
    """Add `backend` to `BACKENDS` (a second one under a taken name is refused)."""
    return BACKENDS.register(backend.name, backend)


def list_backends() -> list[str]:
    """The back-end names `--backend` accepts."""
    return BACKENDS.names()


def get_backend(name: str) -> Backend:
    """The back-end `name`, checked usable here (an `InputError` with the fix otherwise)."""
    backend = BACKENDS.get(name)
    backend.check()
    return backend


# --- transformers --------------------------------------------------------------------------------


def _load_hf(model: str, adapter: str | None = None, *, revision: str | None = None, device: str = "auto",
             dtype: str | None = None) -> Engine:
    from pathinsight_models.loading import load_for_inference

    from .generation import decoding_params, generate, greedy_config

    model_obj, processor, info = load_for_inference(model, adapter, revision=revision, device=device, dtype=dtype)
    pad = getattr(getattr(processor, "tokenizer", processor), "pad_token_id", None)

    def run(items: Sequence[Item], **kwargs: Any) -> list[str]:
        return generate(model_obj, processor, items, **kwargs)

    return Engine("hf", processor, info, run, lambda n: decoding_params(greedy_config(model_obj, n, pad)))


# --- vLLM ----------------------------------------------------------------------------------------


def vllm_problem(installed: bool, cuda: bool) -> str | None:
    """Why the vLLM back-end cannot run here (None: it can)."""
    if not installed:
        return "the vllm back-end needs the vllm package, which is not installed"
    if not cuda:
        return "the vllm back-end needs a CUDA GPU, and torch sees none"
    return None


def _check_vllm() -> None:
    import torch

    problem = vllm_problem(importlib.util.find_spec("vllm") is not None, torch.cuda.is_available())
    if problem:
        raise InputError(problem, fix=f"use --backend hf (default), or on a GPU machine: {VLLM_INSTALL}")


def vllm_inputs(processor: Any, items: Sequence[Item]) -> list[dict[str, Any]]:
    """vLLM prompt dicts: the text the transformers back-end feeds its processor, plus the item's image."""
    from .generation import _image, render_prompts

    out = []
    for text, item in zip(render_prompts(processor, items), items, strict=True):
        request: dict[str, Any] = {"prompt": text}
        image = _image(item) if item.get("image") is not None else None
        if image is not None:
            request["multi_modal_data"] = {"image": image}
        out.append(request)
    return out


def vllm_sampling_kwargs(gen: Any) -> dict[str, Any]:
    """`vllm.SamplingParams` arguments equal to the transformers back-end's greedy config `gen`.

    Settings of `gen` vLLM has no equal for are refused rather than silently dropped.
    """
    unsupported = {name: getattr(gen, name, None) for name in ("no_repeat_ngram_size", "min_new_tokens",
                                                              "bad_words_ids", "suppress_tokens")}
    unsupported = {k: v for k, v in unsupported.items() if v}
    if getattr(gen, "min_length", 0):
        unsupported["min_length"] = gen.min_length
    if unsupported:
        raise InputError(f"the model's generation config sets {unsupported}, which the vllm back-end cannot "
                         "reproduce", fix="use --backend hf")
    eos = gen.eos_token_id
    eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return {"temperature": 0.0, "max_tokens": gen.max_new_tokens, "stop_token_ids": eos_ids,
            "repetition_penalty": gen.repetition_penalty or 1.0, "skip_special_tokens": True}


def _generation_config(source: str, revision: str | None) -> Any:
    """The checkpoint's generation config, as `from_pretrained` gives a transformers model."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(source, revision=revision)
    except OSError:  # no generation_config.json: derived from the model config, as transformers does
        config = AutoConfig.from_pretrained(source, revision=revision)
        return GenerationConfig.from_model_config(getattr(config, "text_config", None) or config)


def _load_vllm(model: str, adapter: str | None = None, *, revision: str | None = None, device: str = "auto",
               dtype: str | None = None) -> Engine:
    from vllm import LLM, SamplingParams

    if device not in ("auto", "cuda"):
        raise InputError(f"the vllm back-end runs on the GPU, not --device {device}", fix="drop --device, or use --backend hf")
    from pathinsight_models.loading import (
        _load_processor,
        adapter_base,
        load_for_inference,
        local_fingerprint,
    )

    from .generation import decoding_params, greedy_config

    closers: list[Callable[[], None]] = []
    if adapter or adapter_base(model, revision) is not None:
        # vLLM serves plain checkpoints: merge the adapter once (on CPU, in the checkpoint's dtype) and
        # serve the merged copy, so both back-ends decode the same weights.
        merged, processor, info = load_for_inference(model, adapter, revision=revision, device="cpu",
                                                     dtype=dtype or "auto")
        tmp = tempfile.TemporaryDirectory(prefix="pathinsight-vllm-")
        closers.append(tmp.cleanup)
        merged.save_pretrained(tmp.name)
        processor.save_pretrained(tmp.name)
        del merged
        source, source_revision = tmp.name, None
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model, revision=revision)
        processor, processor_from = _load_processor(model, [(model, revision)])
        info = {"id": model, "revision": revision, "commit": getattr(config, "_commit_hash", None),
                "class": (config.architectures or [None])[0], "processor_from": processor_from}
        if Path(model).is_dir():
            info["digest"] = local_fingerprint(Path(model))
        source, source_revision = model, revision
    gen = _generation_config(source, source_revision)
    llm = LLM(model=source, revision=source_revision, tokenizer=source, tokenizer_revision=source_revision,
              dtype=dtype or "auto", seed=0, limit_mm_per_prompt={"image": 1})
    served = getattr(getattr(getattr(llm, "llm_engine", None), "model_config", None), "dtype", dtype or "auto")
    info.update(dtype=str(served).replace("torch.", ""), device="cuda",
                engine=f"vllm {importlib.metadata.version('vllm')}")
    tokenizer = getattr(processor, "tokenizer", processor)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    shim = SimpleNamespace(generation_config=gen)

    def run(items: Sequence[Item], *, max_new_tokens: int, batch_size: int = 8, progress: bool = True,
            desc: str = "generating", **_: Any) -> list[str]:
        params = SamplingParams(**vllm_sampling_kwargs(greedy_config(shim, max_new_tokens, pad)))
        answers: list[str] = []
        for start in range(0, len(items), VLLM_CHUNK):
            outputs = llm.generate(vllm_inputs(processor, items[start:start + VLLM_CHUNK]), params, use_tqdm=progress)
            answers += [o.outputs[0].text.strip() for o in outputs]
        return answers

    pad_recorded = getattr(tokenizer, "pad_token_id", None)
    return Engine("vllm", processor, info, run,
                  lambda n: decoding_params(greedy_config(shim, n, pad_recorded)), closers)


register_backend(Backend("hf", "transformers `generate`, batched greedy decoding (any device)", _load_hf))
register_backend(Backend("vllm", "vLLM offline engine on a CUDA GPU (optional: pathinsight[vllm])", _load_vllm,
                         _check_vllm))
