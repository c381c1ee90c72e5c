"""Batch collation: PathEnhanceDS rows -> model inputs with labels on assistant tokens only."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pathinsight_models.training.data import to_chat_messages

logger = logging.getLogger("pathinsight.training")


class ExampleCache:
    """Per-example work done once before training, looked up by row `id`: text-side features
    (`data.tokenize_example`) and, optionally, processed images (`data.image_features`).

    An id seen twice (within or across splits) is dropped, so a lookup never returns another row's
    tokens; such rows simply take the tokenizing path.
    """

    def __init__(self) -> None:
        self._text: dict[Any, dict[str, np.ndarray]] = {}
        self._pixels: dict[Any, dict[str, Any]] = {}
        self._ambiguous: set[Any] = set()

    def add(self, ids: Iterable[Any], text: Iterable[dict[str, np.ndarray]],
            pixels: Iterable[dict[str, Any]] | None = None) -> None:
        """Cache tokenized text (and optionally processed pixels) by row id; ids seen twice are dropped."""
        ids, text = list(ids), list(text)
        images = list(pixels) if pixels is not None else [None] * len(ids)
        for key, feats, pix in zip(ids, text, images, strict=True):
            if key is None or key in self._ambiguous:
                continue
            if key in self._text:
                del self._text[key]
                self._pixels.pop(key, None)
                self._ambiguous.add(key)
                continue
            self._text[key] = feats
            if pix is not None:
                self._pixels[key] = pix

    def text(self, key: Any) -> dict[str, np.ndarray] | None:
        """Cached token features of row `key`, or None."""
        return self._text.get(key)

    def pixels(self, key: Any) -> dict[str, Any] | None:
        """Cached processed pixels of row `key`, or None."""
        return self._pixels.get(key)

    def has_pixels(self, keys: Iterable[Any]) -> bool:
        """True when every key has cached pixels."""
        return all(k in self._pixels for k in keys)

    def __len__(self) -> int:
        return len(self._text)


def decode_images(images: Sequence[Any]) -> list[Any]:
    """PIL images from a row's `images`, decoding `{"bytes", "path"}` values (an `Image(decode=False)`
    column) exactly as `datasets` would."""
    from datasets import Image

    return [Image().decode_example(im) if isinstance(im, dict) else im for im in images]


def _concat_images(parts: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Per-example processed images joined into the batch the processor would build, or None when that
    needs padding (e.g. different numbers of tiles), which only the processor knows how to do."""
    import torch

    parts = [p for p in parts if p]
    if not parts:
        return {}
    keys = list(parts[0])
    if any(list(p) != keys for p in parts):
        return None
    out = {}
    for key in keys:
        tensors = [p[key] for p in parts]
        if any(t.dim() == 0 or t.shape[1:] != tensors[0].shape[1:] or t.dtype != tensors[0].dtype for t in tensors):
            return None
        out[key] = torch.cat(tensors, dim=0)
    return out


@dataclass
class VisionChatCollator:
    """Builds a training batch exactly as TRL's vision collator does, faster when rows are cached.

    TRL renders the chat template with `{% generation %}` markers, asks the processor for the
    assistant mask (re-aligned after image-token expansion by transformers >= 5.18) and sets every
    other label - system, user, image and padding tokens - to -100. No truncation happens here:
    over-long rows were dropped beforehand (`data.prepare_split`).

    With a `cache` (`ExampleCache`, keyed by row id), a batch whose rows are all cached skips
    rendering and tokenizing: the cached ids and masks are right-padded the way the tokenizer pads
    them, and the images come from the cache too when it holds them (otherwise they go through the
    processor). `check_cache` compares both paths on real rows and turns the cache off if they differ
    in any tensor. Rows may carry undecoded images (`{"bytes", "path"}`); they are decoded on use.
    """

    processor: Any
    chat_template: str
    assistant_only_loss: bool = True
    pad_to_multiple_of: int | None = None
    cache: ExampleCache | None = None
    stats: dict[str, int] = field(default_factory=lambda: {"cached": 0, "tokenized": 0})

    def __post_init__(self) -> None:
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        self._inner = DataCollatorForVisionLanguageModeling(
            processor=self.processor,
            max_length=None,
            completion_only_loss=False,
            pad_to_multiple_of=self.pad_to_multiple_of,
            assistant_only_loss=self.assistant_only_loss,
            chat_template=self.chat_template,
        )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._from_cache(examples) if self.cache is not None else None
        if batch is None:
            batch = self._tokenize(examples)
            self.stats["tokenized"] += 1
        else:
            self.stats["cached"] += 1
        if self.assistant_only_loss and bool((batch["labels"] == -100).all()):
            raise ValueError(
                "a batch has no assistant tokens to learn from: the chat template's {% generation %} block "
                "did not cover any assistant text"
            )
        return batch

    def _tokenize(self, examples: Sequence[dict[str, Any]]) -> Any:
        rows = [{"images": decode_images(ex["images"]), "messages": to_chat_messages(ex["messages"])}
                for ex in examples]
        return self._inner(rows)

    def _images(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        assert self.cache is not None
        keys = [ex.get("id") for ex in examples]
        if self.cache.has_pixels(keys):
            joined = _concat_images([self.cache.pixels(k) for k in keys])
            if joined is not None:
                return joined
        images = [decode_images(ex["images"]) for ex in examples]
        if not any(im is not None for row in images for im in row):
            return {}
        return dict(self.processor(images=images, return_tensors="pt"))

    def _from_cache(self, examples: Sequence[dict[str, Any]]) -> Any:
        import torch
        from transformers import BatchFeature

        assert self.cache is not None
        cached = [self.cache.text(ex.get("id")) for ex in examples]
        if any(c is None for c in cached):
            return None
        keys = list(cached[0])  # type: ignore[arg-type]
        if any(list(c) != keys for c in cached):  # type: ignore[arg-type]
            return None
        if self.assistant_only_loss and "assistant_masks" not in keys:
            return None
        width = max(len(c["input_ids"]) for c in cached)  # type: ignore[index]
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        tokenizer = self.processor.tokenizer
        pad_values = {"input_ids": tokenizer.pad_token_id, "token_type_ids": tokenizer.pad_token_type_id}
        text: dict[str, Any] = {}
        for key in keys:
            out = torch.full((len(cached), width), pad_values.get(key, 0), dtype=torch.long)
            for row, feats in enumerate(cached):
                values = feats[key]  # type: ignore[index]
                out[row, : len(values)] = torch.from_numpy(values.astype(np.int64))
            text[key] = out
        assistant = text.pop("assistant_masks", None)
        batch = BatchFeature({**text, **self._images(examples)})
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        if self.assistant_only_loss:
            labels[assistant == 0] = -100
        batch["labels"] = labels
        return batch

    def check_cache(self, examples: Sequence[dict[str, Any]], batch_size: int = 2) -> bool:
        """Collate the first `batch_size` (at least 2, so padding is exercised) cached rows of `examples`
        both ways; if the batches differ in any tensor, or no row is cached, switch the cache off.
        Returns whether the cache stays on."""
        if self.cache is None:
            return False
        cache = self.cache
        rows = [ex for ex in examples if cache.text(ex.get("id")) is not None][: max(2, batch_size)]
        fast = self._from_cache(rows) if rows else None
        if fast is not None and same_batch(fast, self._tokenize(rows)):
            return True
        logger.warning("pre-tokenized batches %s for %s; tokenizing every batch instead",
                       "differ from the processor's" if fast is not None else "could not be checked",
                       type(self.processor).__name__)
        self.cache = None
        return False


def same_batch(a: Any, b: Any) -> bool:
    """Same keys, and every tensor equal in shape, dtype and value."""
    import torch

    if set(a.keys()) != set(b.keys()):
        return False
    for key in a.keys():
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True
