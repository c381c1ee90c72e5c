"""Ask a fine-tuned model about an image: `answer(...)` for code, `pathinsight chat` for the shell.

Loads adapter repos (PEFT, base fetched from `adapter_config.json`), merged and full repos alike
with `pathinsight_models.loading.load_for_inference`, the loader `pathinsight eval` uses (same
processor rule, revision pinning and dtype defaults). Answers are greedy, with the same prompt rendering and
generation code as `pathinsight eval`, so the demo says what the benchmark measured.

    pathinsight chat --model ORG/NAME --image patch.png --question "What tissue is shown?"
    pathinsight chat --model ORG/NAME --image patch.png          # then type questions, one per line
    pathinsight chat --model ORG/NAME --image patch.png --knowledge K --retrieve 3 --question "..."

With `--knowledge K` (a folder from `pathinsight knowledge build`) the k most similar training cases
of K (`knowledge.retrieval.CaseRetriever`: GFT's quadrant vector or the GNN embedding) go into the
prompt before the image, each as an image with its label; this needs a model whose processor takes
several images in one prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathinsight_models.loading import load_for_inference

DEFAULT_MAX_NEW_TOKENS = 128


def load(
    model_id: str, *, revision: str | None = None, device: str = "auto", dtype: str | None = None
) -> tuple[Any, Any]:
    """(model, processor) for a Hub id or local directory of an adapter, merged or full model.

    A thin alias of `pathinsight_models.loading.load_for_inference` (which also returns provenance).
    """
    model, processor, _ = load_for_inference(model_id, revision=revision, device=device, dtype=dtype)
    return model, processor


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


def cases_text(cases: Sequence[Mapping[str, Any]], question: str) -> str:
    """The prompt text when `cases` (each with a `label`) come as images 1..k before the image to assess."""
    listed = "; ".join(f"image {k}: {case['label']}" for k, case in enumerate(cases, 1))
    return (f"The first {len(cases)} images are similar training cases with their diagnoses ({listed}). "
            f"Image {len(cases) + 1} is the case to assess.\n{question.strip()}")


def check_several_images(processor: Any, n: int, model_name: str = "the model") -> None:
    """InputError unless `processor` renders and encodes a prompt with `n` images (tiny blank probes)."""
    from PIL import Image

    probe = [Image.new("RGB", (32, 32), (255, 255, 255)) for _ in range(n)]
    messages = [{"role": "user", "content": [*({"type": "image"} for _ in probe), {"type": "text", "text": "?"}]}]
    try:
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        processor(text=[text], images=[probe], return_tensors="pt")
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise InputError(f"{model_name} does not take {n} images in one prompt ({type(exc).__name__}: {exc})",
                         fix="similar-case retrieval needs a model whose processor takes several images "
                             "(e.g. LLaVA, Qwen2-VL, Idefics3, SmolVLM); drop --knowledge/--retrieve") from None


def answer(model: Any, processor: Any, image: Any, question: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
           *, cases: Sequence[Mapping[str, Any]] | None = None) -> str:
    """Greedy answer of `model` to `question` about `image` (PIL image, path, or None for text only).

    `cases` (e.g. `knowledge.retrieval.CaseRetriever(K).search(image, k)`: dicts with `image` and
    `label`) are put into the prompt as images before `image`, with their labels in the text.
    """
    from pathinsight_models.evaluation.generation import generate

    if not question or not question.strip():
        raise InputError("empty question", fix="ask something, e.g. 'What type of tissue is shown?'")
    picture = open_image(image)
    item: dict[str, Any] = {"id": "chat"}
    if cases:
        if picture is None:
            raise InputError("similar cases need an image to compare with", fix="pass --image")
        missing = next((c for c in cases if c.get("image") is None or not c.get("label")), None)
        if missing is not None:
            raise InputError(f"similar case {missing.get('id')!r} lacks its image or label",
                             fix="pass cases from CaseRetriever.search(image, k) (with_images=True)")
        images = [open_image(c["image"]) for c in cases] + [picture]
        content: list[dict[str, Any]] = [*({"type": "image", "text": None} for _ in images),
                                         {"type": "text", "text": cases_text(cases, question)}]
        item["images"] = images
    else:
        content = [{"type": "text", "text": question.strip()}]
        if picture is not None:
            content.insert(0, {"type": "image", "text": None})
        item["image"] = picture
    item["messages"] = [{"role": "user", "content": content}]
    return generate(model, processor, [item], max_new_tokens=max_new_tokens, batch_size=1, progress=False)[0]
