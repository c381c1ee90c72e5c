"""Training data: load PathEnhanceDS splits, convert messages, drop over-long examples (counted)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


def example_length(processor: Any, chat_template: str, images: list[Any], messages: list[dict[str, Any]]) -> int:
    """Tokens of one example after image-token expansion, exactly as the collator will build it."""
    from trl.data_utils import prepare_multimodal_messages

    conversation = prepare_multimodal_messages(to_chat_messages(messages), images=list(images))
    processed = processor.apply_chat_template(
        [conversation],
        chat_template=chat_template,
        tokenize=True,
        return_dict=True,
        processor_kwargs={"add_special_tokens": False, "padding": False},
    )
    return len(processed["input_ids"][0])


def filter_overlong(
    dataset: Any, processor: Any, chat_template: str, max_length: int | None, desc: str = "train"
) -> tuple[Any, list[dict[str, Any]]]:
    """Drop examples longer than `max_length` tokens (never truncate: that could cut image tokens).

    Returns the kept dataset and one `{"index", "id", "length"}` record per dropped example.
    """
    if max_length is None:
        return dataset, []
    from tqdm.auto import tqdm

    view = dataset.select_columns([c for c in ("id", "images", "messages") if c in dataset.column_names])
    keep: list[int] = []
    dropped: list[dict[str, Any]] = []
    for index, row in enumerate(tqdm(view, desc=f"measuring {desc} lengths", unit="ex")):
        length = example_length(processor, chat_template, row["images"], row["messages"])
        if length <= max_length:
            keep.append(index)
        else:
            dropped.append({"index": index, "id": row.get("id"), "length": length})
    if dropped:
        logger.warning("dropped %d of %d %s examples longer than max_length=%d tokens",
                       len(dropped), len(dataset), desc, max_length)
    if not keep:
        raise InputError(
            f"every {desc} example is longer than max_length={max_length} tokens",
            fix=f"raise max_length (shortest example: {min(d['length'] for d in dropped)} tokens)",
        )
    return (dataset if len(keep) == len(dataset) else dataset.select(keep)), dropped
