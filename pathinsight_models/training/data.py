"""Training data: load PathEnhanceDS splits, convert messages, drop over-long examples (counted), and
measure / tokenize every example once so batches only pad (see `prepare_split`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathenhanceds.errors import InputError

logger = logging.getLogger("pathinsight.training")

REQUIRED_COLUMNS = ("images", "messages")


def to_chat_messages(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """PathEnhanceDS messages -> the structure processors' chat templates expect (pure).

    Arrow gives every content part both keys (`{"type": "image", "text": None}`); templates test for
    keys (`'text' in content`) or render `None`, so keys whose value is None are dropped. Plain-string
    content is wrapped as one text part.
    """
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = [{k: v for k, v in part.items() if v is not None} for part in content]
        out.append({"role": message["role"], "content": parts})
    return out


def load_split(dataset_name: str, config: str | None, split: str, revision: str | None = None) -> Any:
    """One split of a PathEnhanceDS directory or Hub dataset, checked for the columns we train on."""
    import datasets

    local = Path(dataset_name).expanduser()
    source = str(local) if local.exists() else dataset_name
    try:
        dataset = datasets.load_dataset(source, config, split=split, revision=revision)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise InputError(
            f"cannot load split {split!r} of config {config!r}: {exc}",
            file=source,
            fix="check dataset_name / dataset_config / dataset_train_split (configs: captioning, classification, "
            "vqa, conversation, all)",
        ) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise InputError(f"dataset lacks column(s) {missing}", file=source,
                         fix="use a PathEnhanceDS dataset (columns images + messages)")
    return dataset


# Sequence-aligned outputs of a processor's text side; everything else it returns comes from images.
TEXT_KEYS = ("input_ids", "attention_mask", "assistant_masks", "token_type_ids", "mm_token_type_ids")


def tokenize_example(
    processor: Any,
    chat_template: str,
    images: list[Any],
    messages: list[dict[str, Any]],
    assistant_masks: bool = False,
) -> dict[str, list[int]]:
    """Text-side features of one example (after image-token expansion), unpadded.

    The same `apply_chat_template` call TRL's collator makes for a batch, for one row: token ids,
    attention mask, the assistant mask when asked, and any other per-token ids the processor adds.
    """
    from trl.data_utils import prepare_multimodal_messages

    conversation = prepare_multimodal_messages(to_chat_messages(messages), images=list(images))
    processed = processor.apply_chat_template(
        [conversation],
        chat_template=chat_template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=assistant_masks,
        processor_kwargs={"add_special_tokens": False, "padding": False},
    )
    return {key: list(processed[key][0]) for key in TEXT_KEYS if key in processed}


def example_length(processor: Any, chat_template: str, images: list[Any], messages: list[dict[str, Any]]) -> int:
    """Tokens of one example after image-token expansion, exactly as the collator will build it."""
    return len(tokenize_example(processor, chat_template, images, messages)["input_ids"])


def image_features(processor: Any, images: list[Any]) -> dict[str, Any] | None:
    """What the processor makes of one example's images, as tensors with the batch as first dimension
    (None if it returns anything else, e.g. lists; {} without images)."""
    import torch

    if not any(im is not None for im in images):
        return {}
    processed = processor(images=[list(images)], return_tensors="pt")
    out = dict(processed)
    return out if all(isinstance(v, torch.Tensor) for v in out.values()) else None


@dataclass
class PreparedSplit:
    """A split after the length pass: kept rows, what was dropped, and what the pass measured.

    `lengths[i]` is the token count of kept row i; `features[i]` its text-side features as compact
    arrays and `pixels[i]` its processed images (None unless asked for and within budget); `ids` the
    kept rows' `id` values (None without an id column).
    """

    dataset: Any
    dropped: list[dict[str, Any]]
    lengths: list[int] | None = None
    features: list[dict[str, np.ndarray]] | None = None
    ids: list[Any] | None = None
    pixels: list[dict[str, Any]] | None = None
    answer_lengths: list[int] | None = None  # assistant tokens per kept row (with `measure`)


def _compact(features: dict[str, list[int]]) -> dict[str, np.ndarray]:
    # int32 ids and int8 masks: a tenth of the memory of Python int lists.
    return {k: np.asarray(v, dtype=np.int32 if k == "input_ids" else np.int8) for k, v in features.items()}


def prepare_split(
    dataset: Any,
    processor: Any,
    chat_template: str,
    max_length: int | None,
    desc: str = "train",
    *,
    measure: bool = False,
    keep_features: bool = False,
    assistant_masks: bool = False,
    pixel_budget_mb: float = 0,
) -> PreparedSplit:
    """One pass over the split: drop examples longer than `max_length` tokens (never truncate: that
    could cut image tokens), and optionally keep every kept row's length (`measure`, for
    length-grouped batches), text-side features (`keep_features`, so batches are not tokenized
    again) and processed images (`pixel_budget_mb` > 0, so images are not decoded and processed again
    every epoch). Processed images are kept for the whole split or not at all: if the first one,
    times the number of rows, exceeds the budget, none are. Without a limit and with nothing to
    keep, the split is returned untouched.
    """
    if max_length is None and not (measure or keep_features):
        return PreparedSplit(dataset, [])
    from tqdm.auto import tqdm

    view = dataset.select_columns([c for c in ("id", "images", "messages") if c in dataset.column_names])
    keep: list[int] = []
    dropped: list[dict[str, Any]] = []
    lengths: list[int] = []
    features: list[dict[str, np.ndarray]] = []
    ids: list[Any] = []
    pixels: list[dict[str, Any]] | None = [] if keep_features and pixel_budget_mb > 0 else None
    pixel_bytes = 0
    label = f"tokenizing {desc} examples" if keep_features else f"measuring {desc} lengths"
    answer_lengths: list[int] = []
    cache_masks = keep_features and assistant_masks
    for index, row in enumerate(tqdm(view, desc=label, unit="ex")):
        feats = tokenize_example(processor, chat_template, row["images"], row["messages"],
                                 assistant_masks=cache_masks or measure)
        length = len(feats["input_ids"])
        if measure:  # the answer part, so length grouping can leave it out (see `grouping_keys`)
            answer_lengths.append(int(sum(feats.get("assistant_masks") or [])))
            if not cache_masks:
                feats.pop("assistant_masks", None)
        if max_length is not None and length > max_length:
            dropped.append({"index": index, "id": row.get("id"), "length": length})
            continue
        keep.append(index)
        lengths.append(length)
        ids.append(row.get("id"))
        if keep_features:
            features.append(_compact(feats))
        if pixels is not None:
            processed = image_features(processor, row["images"])
            size = sum(v.numel() * v.element_size() for v in processed.values()) if processed is not None else 0
            pixel_bytes += size
            estimate = max(pixel_bytes, size * len(dataset)) if not pixels else pixel_bytes
            if processed is None or estimate > pixel_budget_mb * 2**20:
                logger.info("not keeping processed %s images: ~%.0f MB would exceed pixel_cache_mb=%s (or the "
                            "processor returns non-tensors)", desc, estimate / 2**20, pixel_budget_mb)
                pixels = None
            else:
                pixels.append(processed)
    if dropped:
        logger.warning("dropped %d of %d %s examples longer than max_length=%d tokens",
                       len(dropped), len(dataset), desc, max_length)
    if not keep:
        raise InputError(
            f"every {desc} example is longer than max_length={max_length} tokens",
            fix=f"raise max_length (shortest example: {min(d['length'] for d in dropped)} tokens)",
        )
    kept = dataset if len(keep) == len(dataset) else dataset.select(keep)
    return PreparedSplit(kept, dropped, lengths if measure else None, features if keep_features else None,
                         ids if "id" in view.column_names else None, pixels,
                         [answer_lengths[i] for i in keep] if measure else None)


def grouping_keys(lengths: list[int], answer_lengths: list[int] | None, answer_bucket_tokens: int) -> list[int]:
    """Sort keys for length-grouped batches: the prompt's exact length plus the answer's length rounded
    up to a multiple of `answer_bucket_tokens` (pure).

    Grouping by exact total length builds batches of one class whenever the answer's length gives the
    class away (the nine CRC class names; yes/no sentences), and learning suffers badly (the demo's
    CRC macro-F1 fell from 1.00 to 0.14). Short answers all land in the first bucket, so such rows
    come in random order; long answers (captions, dialogues) are still grouped to within a bucket.
    """
    if not answer_lengths or answer_bucket_tokens <= 1:
        return list(lengths)
    q = answer_bucket_tokens
    return [length - a + -(-a // q) * q for length, a in zip(lengths, answer_lengths, strict=True)]


def length_grouped_sampler(lengths: list[int], batch_size: int, seed: int) -> Any:
    """transformers' `LengthGroupedSampler` (random mega-batches of 50 batches or a quarter of the data,
    each sorted by `lengths`, the longest batch first) whose order is drawn from `(seed, epoch)`, with
    the batches after the first served in random order: transformers leaves each mega-batch's batches
    sorted, so neighbouring batches would hold neighbouring lengths (often the same class).

    Seeding per epoch, instead of from the global RNG, gives every rank the same order and a
    resumed run the order the interrupted one had (accelerate calls `set_epoch` each epoch).
    """
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class SeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self) -> None:
            super().__init__(batch_size, lengths=lengths)
            self.seed, self.epoch = seed, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):  # type: ignore[no-untyped-def]
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
            batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
            order = [0, *(torch.randperm(len(batches) - 1, generator=generator) + 1).tolist()] if batches else []
            return iter([i for b in order for i in batches[b]])

    return SeededLengthGroupedSampler()


def without_image_decoding(dataset: Any) -> Any:
    """The same rows with `images` read as `{"bytes", "path"}` instead of decoded PIL images.

    For splits whose processed images are all cached, so fetching a batch does not decode images
    nobody looks at. Metadata only, as `Dataset.cast_column` does for an `Image` column (which it
    cannot do for a list of images without rewriting the data).
    """
    import copy

    import datasets

    feature = dataset.features.get("images") if hasattr(dataset, "features") else None
    if not (isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image)):
        return dataset
    out = copy.deepcopy(dataset)  # cheap: Arrow tables are shared, not copied
    out.info.features["images"] = datasets.List(datasets.Image(decode=False))
    # Transforms cache their results by fingerprint; this view must not share the decoded one's.
    out._fingerprint = f"{dataset._fingerprint}-undecoded"
    return out

