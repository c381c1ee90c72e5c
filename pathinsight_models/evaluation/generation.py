"""Batched greedy generation with left padding that gives the same answers as a per-item loop.

Items are sorted by prompt length (so batches need little or no padding), each distinct chat prompt
is rendered once, images are decoded only when their batch runs, and the answers come back in the
original order.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from .tasks import Item


def _chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Schema messages -> processor chat format (drop the `text: None` of image parts)."""
    out = []
    for m in messages:
        parts = []
        for part in m["content"]:
            if part["type"] == "image":
                parts.append({"type": "image"})
            else:
                parts.append({"type": "text", "text": part.get("text") or ""})
        out.append({"role": m["role"], "content": parts})
    return out


def _image(item: Item) -> Any:
    image = item.get("image")
    if callable(image):
        image = image()
    if image is not None and getattr(image, "mode", "RGB") != "RGB":
        image = image.convert("RGB")
    return image


def _images(item: Item) -> list[Any]:
    """The item's images: its `images` list (several images in one prompt) or its one `image`."""
    many = item.get("images")
    if many is None:
        return [_image(item)]
    return [_image({"image": image}) for image in many]


def greedy_config(model: Any, max_new_tokens: int, pad_token_id: int | None) -> Any:
    """The model's generation config made greedy (sampling knobs cleared so nothing warns or samples)."""
    gen = copy.deepcopy(model.generation_config)
    gen.do_sample = False
    gen.num_beams = 1
    gen.temperature = None
    gen.top_p = None
    gen.top_k = None
    gen.max_new_tokens = max_new_tokens
    gen.max_length = None
    if pad_token_id is not None:
        gen.pad_token_id = pad_token_id
    return gen


def decoding_params(gen: Any) -> dict[str, Any]:
    """What results.json records about decoding."""
    return {"strategy": "greedy", "do_sample": False, "num_beams": 1, "max_new_tokens": gen.max_new_tokens,
            "repetition_penalty": getattr(gen, "repetition_penalty", None), "eos_token_id": gen.eos_token_id,
            "pad_token_id": gen.pad_token_id}


def render_prompts(processor: Any, items: Sequence[Item]) -> list[str]:
    """Chat-template text of each item's prompt; identical prompts (e.g. CRC's fixed query) render once."""
    cache: dict[str, str] = {}
    texts = []
    for item in items:
        messages = _chat_messages(item["messages"])
        key = json.dumps(messages, sort_keys=True)
        if key not in cache:
            cache[key] = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        texts.append(cache[key])
    return texts


def generate(
    model: Any,
    processor: Any,
    items: Sequence[Item],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "generating",
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers for `items`, in their order (an item's `images` list: several images in one prompt).

    Left padding keeps every prompt flush against the generated tokens, so position ids and the
    attention mask give each row the computation it would get alone.
    """
    import torch

    if not items:
        return []
    tokenizer = getattr(processor, "tokenizer", processor)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gen = greedy_config(model, max_new_tokens, pad_id)
    texts = render_prompts(processor, items)
    has_image = [item.get("image") is not None or bool(item.get("images")) for item in items]
    lengths = {t: len(tokenizer(t).input_ids) for t in set(texts)}
    # Bucket: image/no-image apart, then by prompt length (with a stable tie-break on position).
    order = sorted(range(len(items)), key=lambda i: (has_image[i], lengths[texts[i]], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and has_image[batches[-1][0]] == has_image[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    answers: list[str] = [""] * len(items)
    device = next(model.parameters()).device
    was_training, padding_side = model.training, tokenizer.padding_side
    tokenizer.padding_side = "left"  # restored below: a training collator may rely on right padding
    model.eval()
    try:
        with tqdm(total=len(items), desc=desc, unit="item", disable=not progress) as bar, torch.inference_mode():
            for batch in batches:
                kwargs: dict[str, Any] = {"text": [texts[i] for i in batch], "return_tensors": "pt", "padding": True}
                if has_image[batch[0]]:
                    kwargs["images"] = [_images(items[i]) for i in batch]
                inputs = processor(**kwargs).to(device)
                out = model.generate(**inputs, generation_config=gen)
                new = out[:, inputs["input_ids"].shape[1]:]
                for i, text in zip(batch, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
                    answers[i] = text.strip()
                bar.update(len(batch))
                if on_batch:
                    on_batch(len(batch))
    finally:
        tokenizer.padding_side = padding_side
        if was_training:
            model.train()
    return answers
