"""Ask a fine-tuned model about an image: `answer(...)` for code, `pathinsight chat` for the shell.

Loads adapter repos (PEFT, base fetched from `adapter_config.json`), merged and full repos alike
through `AutoModelForImageTextToText`; the processor comes from the repo itself and, for an adapter
repo that lacks one, from its base model. Answers are greedy, with the same prompt rendering and
generation code as `pathinsight eval`, so the demo says what the benchmark measured.

    pathinsight chat --model ORG/NAME --image patch.png --question "What tissue is shown?"
    pathinsight chat --model ORG/NAME --image patch.png          # then type questions, one per line
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathinsight_models.loading import adapter_base, pin_adapter_revision

DEFAULT_MAX_NEW_TOKENS = 128


def load(
    model_id: str, *, revision: str | None = None, device: str = "auto", dtype: str | None = None
) -> tuple[Any, Any]:
    """(model, processor) for a Hub id or local directory of an adapter, merged or full model."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype: Any = getattr(torch, dtype) if dtype and dtype != "auto" else ("auto" if device != "cpu" else torch.float32)
    model_id, revision = pin_adapter_revision(model_id, revision)
    try:
        model = AutoModelForImageTextToText.from_pretrained(model_id, revision=revision, dtype=torch_dtype)
    except OSError as exc:
        raise InputError(f"cannot load model {model_id}: {exc}", file=model_id,
                         fix="pass a Hub id or a directory written by `pathinsight train` / `save_pretrained`") from None
    try:
        processor = AutoProcessor.from_pretrained(model_id, revision=revision)
    except OSError:
        base = adapter_base(model_id, revision)
        if base is None:
            raise InputError(f"{model_id} has no processor files", file=model_id,
                             fix="save the processor next to the weights") from None
        processor = AutoProcessor.from_pretrained(base)
    return model.to(device).eval(), processor


def open_image(image: Any) -> Any:
    """PIL image from a PIL image, a path, or None."""
    if image is None:
        return None
    if isinstance(image, str | Path):
        from PIL import Image, UnidentifiedImageError

        path = Path(image)
        if not path.is_file():
            raise InputError("image not found", file=path, fix="pass an existing image file")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except UnidentifiedImageError:
            raise InputError("not an image file", file=path, fix="pass a PNG, JPEG or TIFF image") from None
    return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image


def answer(model: Any, processor: Any, image: Any, question: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> str:
    """Greedy answer of `model` to `question` about `image` (PIL image, path, or None for text only)."""
    from pathinsight_models.evaluation.generation import generate

    if not question or not question.strip():
        raise InputError("empty question", fix="ask something, e.g. 'What type of tissue is shown?'")
    picture = open_image(image)
    content: list[dict[str, Any]] = [{"type": "text", "text": question.strip()}]
    if picture is not None:
        content.insert(0, {"type": "image", "text": None})
    item = {"id": "chat", "messages": [{"role": "user", "content": content}], "image": picture}
    return generate(model, processor, [item], max_new_tokens=max_new_tokens, batch_size=1, progress=False)[0]
