"""Batch collation: PathEnhanceDS rows -> model inputs with labels on assistant tokens only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pathinsight_models.training.data import to_chat_messages


@dataclass
class VisionChatCollator:
    """Converts messages (pure `to_chat_messages`), then defers to TRL's vision collator.

    TRL renders the chat template with `{% generation %}` markers, asks the processor for the
    assistant mask (re-aligned after image-token expansion by transformers >= 5.18) and sets every
    other label - system, user, image and padding tokens - to -100. No truncation happens here:
    over-long rows were dropped beforehand (`data.filter_overlong`).
    """

    processor: Any
    chat_template: str
    assistant_only_loss: bool = True
    pad_to_multiple_of: int | None = None

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
        rows = [{"images": list(ex["images"]), "messages": to_chat_messages(ex["messages"])} for ex in examples]
        batch = self._inner(rows)
        if self.assistant_only_loss and bool((batch["labels"] == -100).all()):
            raise ValueError(
                "a batch has no assistant tokens to learn from: the chat template's {% generation %} block "
                "did not cover any assistant text"
            )
        return batch
