"""The one row schema shared by every PathEnhanceDS config (pure functions, no I/O)."""

from __future__ import annotations

from typing import Any

from datasets import Features, Image, List, Value

from .layout import DEFAULT_CONFIG

TASKS = ("captioning", "classification", "vqa", "conversation")
CONFIGS = (*TASKS, DEFAULT_CONFIG)  # one folder per task under data/; `all` reads every task's files
SPLITS = ("train", "validation", "test")

FEATURES = Features(
    {
        "id": Value("string"),
        "source": Value("string"),
        "task": Value("string"),
        "images": List(Image()),
        "messages": List(
            {
                "role": Value("string"),
                "content": List({"type": Value("string"), "text": Value("string")}),
            }
        ),
        "label": Value("string"),
        "answer_type": Value("string"),
        "image_sha256": List(Value("string")),
        "license": Value("string"),
    }
)


def text_part(text: str) -> dict[str, Any]:
    """A text content part of a TRL conversational message."""
    return {"type": "text", "text": text}


def image_part() -> dict[str, Any]:
    """An image placeholder part of a TRL conversational message (pixels are in `images`)."""
    return {"type": "image", "text": None}


def make_messages(turns: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Build TRL conversational messages from (role, text) turns.

    The single image part goes at the start of the first user turn.
    """
    messages: list[dict[str, Any]] = []
    image_placed = False
    for role, text in turns:
        if role not in ("user", "assistant", "system"):
            raise ValueError(f"unknown role {role!r}")
        content = [text_part(text)]
        if role == "user" and not image_placed:
            content.insert(0, image_part())
            image_placed = True
        messages.append({"role": role, "content": content})
    return messages


def message_text(message: dict[str, Any]) -> str:
    """Concatenated text parts of one message."""
    return "".join(part["text"] or "" for part in message["content"] if part["type"] == "text")


def answer_type_for(answer: str) -> str:
    """PathVQA convention: closed iff the answer is yes/no."""
    return "closed" if answer.strip().lower().rstrip(".") in ("yes", "no") else "open"
