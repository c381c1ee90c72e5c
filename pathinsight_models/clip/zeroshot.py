"""Zero-shot classification with prompt ensembles, and the image/text encoders it runs on.

Definition (the same as `clip_benchmark`'s `zero_shot_classifier` + `run_classification`, extended to
class synonyms as CONCH does):

1. For each class, the texts are every synonym placed in every template (`template.format(c=synonym)`);
   each text embedding is L2-normalised, the embeddings are averaged, and the mean is normalised again.
2. Each image embedding is L2-normalised; logits are `100 * image @ classifier` (fixed scale 100,
   not the model's learned logit scale, so SigLIP and CLIP are scored the same way).
3. The prediction is the arg-max class.

With one synonym per class this is exactly `clip_benchmark`'s computation (tested against it).

Prompt sets are YAML files (see `prompts/*.yaml` and docs/clip.md): `name`, `description`, `source`
(PathEnhanceDS row source), `config`, `classes` (row label -> synonyms) and `templates` (with `{c}`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathenhanceds.registry import Registry

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
LOGIT_SCALE = 100.0  # clip_benchmark's fixed zero-shot scale


@dataclass
class PromptSet:
    """Class synonyms x templates for one zero-shot task."""

    name: str
    classes: dict[str, list[str]]  # row label -> synonyms (first is the display name)
    templates: list[str]
    description: str = ""
    source: str | None = None  # PathEnhanceDS row `source` the task reads (None: any)
    config: str = "classification"
    path: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        where = self.path or self.name
        if len(self.classes) < 2:
            raise InputError(f"prompt set {self.name!r} needs at least two classes", file=where,
                             fix="list them under `classes:` as `label: [synonym, ...]`")
        for label, synonyms in self.classes.items():
            if isinstance(synonyms, str):
                self.classes[label] = synonyms = [synonyms]
            if not synonyms or not all(isinstance(s, str) and s.strip() for s in synonyms):
                raise InputError(f"class {label!r} of prompt set {self.name!r} has no usable synonym", file=where,
                                 fix="give each class a non-empty list of names")
        if not self.templates or not all("{c}" in t for t in self.templates):
            raise InputError(f"every template of prompt set {self.name!r} must contain {{c}}", file=where,
                             fix='write templates like "an H&E image of {c}." (CONCH\'s CLASSNAME -> {c})')

    @property
    def labels(self) -> list[str]:
        """Row labels in class order."""
        return list(self.classes)

    def texts(self, label: str) -> list[str]:
        """Every synonym of `label` in every template (synonym-major order)."""
        return [t.format(c=s) for s in self.classes[label] for t in self.templates]

    @classmethod
    def from_yaml(cls, path: str | Path) -> PromptSet:
        """Read a prompt-set YAML file."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read prompt set: {exc}", file=path) from exc
        if not isinstance(data, dict) or not isinstance(data.get("classes"), dict):
            raise InputError("a prompt set is a mapping with `classes` and `templates`", file=path,
                             fix="see docs/clip.md (prompt-set YAML format)")
        known = {"name", "classes", "templates", "description", "source", "config"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown prompt-set keys {unknown}", file=path, fix=f"use: {', '.join(sorted(known))}")
        return cls(name=str(data.get("name") or path.stem), classes={str(k): v for k, v in data["classes"].items()},
                   templates=list(data.get("templates") or []), description=str(data.get("description", "")),
                   source=data.get("source"), config=str(data.get("config", "classification")), path=str(path))


PROMPT_SETS: Registry[PromptSet] = Registry(
    "prompt set", fix="use one of: {names}, or pass a prompt-set YAML file (docs/clip.md)")
for _path in sorted(PROMPT_DIR.glob("*.yaml")):
    _set = PromptSet.from_yaml(_path)
    PROMPT_SETS.register(_set.name, _set)


def list_prompt_sets() -> list[str]:
    """Names of the shipped prompt sets."""
    return PROMPT_SETS.names()


def get_prompt_set(name_or_path: str | Path) -> PromptSet:
    """A shipped prompt set by name, or a user's YAML file by path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return PromptSet.from_yaml(text)
    return PROMPT_SETS.get(text)


# ------------------------------------------------------------------------------------------ encoders


class Encoder(ABC):
    """Image and text embeddings (projected, not normalised) of a dual encoder."""

    kind = ""
    name = ""

    @abstractmethod
    def encode_images(self, images: Sequence[Any]) -> Any:
        """(N, D) image embeddings of PIL images."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> Any:
        """(N, D) text embeddings."""


class TransformersEncoder(Encoder):
    """A `transformers` dual encoder (`CLIPModel`, `SiglipModel`, ...) with its processor."""

    kind = "transformers"

    def __init__(self, model: Any, processor: Any, name: str = ""):
        self.model, self.processor, self.name = model.eval(), processor, name
        self.model_type = getattr(model.config, "model_type", "")
        self.max_length = getattr(getattr(model.config, "text_config", None), "max_position_embeddings", None)

    @classmethod
    def load(cls, name: str) -> TransformersEncoder:
        """Load with `AutoModel` + `AutoProcessor`."""
        from transformers import AutoModel, AutoProcessor

        try:
            model = AutoModel.from_pretrained(name)
            processor = AutoProcessor.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load the CLIP model: {exc}", file=name,
                             fix="pass a transformers CLIP/SigLIP directory or id, or an open_clip model "
                             "(hf-hub:ORG/NAME or a directory with open_clip_config.json)") from exc
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise InputError(f"{type(model).__name__} is not a dual (image-text) encoder", file=name,
                             fix="use a CLIPModel / SiglipModel checkpoint")
        return cls(model, processor, name)

    def encode_images(self, images: Sequence[Any]) -> Any:
        """L2-normalised image embeddings."""
        import torch

        pixels = self.processor.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=pixels["pixel_values"])
        return _pooled(out)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Any]:
        """Token ids the way the model was trained: SigLIP pools the last position, so pad to max length."""
        siglip = self.model_type.startswith("siglip")
        return self.processor.tokenizer(list(texts), padding="max_length" if siglip else True, truncation=True,
                                        max_length=self.max_length, return_tensors="pt")

    def encode_texts(self, texts: Sequence[str]) -> Any:
        """L2-normalised text embeddings."""
        import torch

        tokens = self.tokenize(texts)
        kwargs = {"input_ids": tokens["input_ids"]}
        if "attention_mask" in tokens and not self.model_type.startswith("siglip"):
            kwargs["attention_mask"] = tokens["attention_mask"]
        with torch.inference_mode():
            out = self.model.get_text_features(**kwargs)
        return _pooled(out)


def _pooled(out: Any) -> Any:
    # transformers 5 returns a model output whose pooler_output holds the projected embedding.
    return out if not hasattr(out, "pooler_output") else out.pooler_output


class OpenClipEncoder(Encoder):
    """An `open_clip` model (`hf-hub:ORG/NAME`, `local-dir:PATH` or a directory with open_clip_config.json)."""

    kind = "open_clip"

    def __init__(self, model: Any, preprocess: Any, tokenizer: Any, name: str = ""):
        self.model, self.preprocess, self.tokenizer, self.name = model.eval(), preprocess, tokenizer, name

    @classmethod
    def load(cls, name: str) -> OpenClipEncoder:
        """Create model, eval transform and tokenizer with open_clip's own factory."""
        import open_clip

        spec = open_clip_spec(name)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(spec)
            tokenizer = open_clip.get_tokenizer(spec)
        except (OSError, ValueError, RuntimeError) as exc:
            raise InputError(f"cannot load the open_clip model: {exc}", file=name) from exc
        return cls(model, preprocess, tokenizer, name)

    def encode_images(self, images: Sequence[Any]) -> Any:
        """L2-normalised image embeddings."""
        import torch

        batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images])
        with torch.inference_mode():
            return self.model.encode_image(batch)

    def encode_texts(self, texts: Sequence[str]) -> Any:
        """L2-normalised text embeddings."""
        import torch

        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(list(texts)))


def open_clip_spec(name: str | Path) -> str:
    """open_clip model string for `name`: schemas kept, local directories become `local-dir:`."""
    text = str(name)
    if text.startswith(("hf-hub:", "local-dir:")):
        return text
    return f"local-dir:{text}"


def is_open_clip(name: str | Path) -> bool:
    """True for `hf-hub:`/`local-dir:` names and directories holding an open_clip_config.json."""
    text = str(name)
    return text.startswith(("hf-hub:", "local-dir:")) or (Path(text) / "open_clip_config.json").is_file()


def local_inputs(*names: str | Path | None) -> list[Path]:
    """The inputs among `names` that are folders/files on this machine (`local-dir:` stripped), for the
    output guard's protected paths; Hub ids and `hf-hub:` names are left out."""
    out = []
    for name in names:
        if name is None or str(name) == "":
            continue
        path = Path(str(name).removeprefix("local-dir:")).expanduser()
        if not str(name).startswith("hf-hub:") and path.exists():
            out.append(path)
    return out


def load_encoder(name: str | Path) -> Encoder:
    """The encoder for a model name: open_clip models by their schema/config file, else `transformers`."""
    if is_open_clip(name):
        return OpenClipEncoder.load(str(name))
    return TransformersEncoder.load(str(name))


# ------------------------------------------------------------------------------------------ zero-shot


def zero_shot_classifier(encoder: Encoder, prompts: PromptSet) -> Any:
    """(D, C) matrix of normalised, averaged, renormalised class text embeddings (see module docstring)."""
    import torch
    import torch.nn.functional as F

    columns = []
    for label in prompts.labels:
        embeddings = encoder.encode_texts(prompts.texts(label)).float()
        mean = F.normalize(embeddings, dim=-1).mean(dim=0)
        columns.append(mean / mean.norm())
    return torch.stack(columns, dim=1)


def embed_images(encoder: Encoder, images: Iterable[Any], batch_size: int = 64, desc: str = "images") -> Any:
    """Normalised image embeddings, (N, D), in batches with a progress bar."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    items = list(images)
    chunks = []
    for start in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch", leave=False):
        chunks.append(F.normalize(encoder.encode_images(items[start:start + batch_size]).float(), dim=-1))
    return torch.cat(chunks) if chunks else torch.zeros(0)


def embed_texts(encoder: Encoder, texts: Sequence[str], batch_size: int = 256) -> Any:
    """Normalised text embeddings, (N, D)."""
    import torch
    import torch.nn.functional as F

    chunks = [F.normalize(encoder.encode_texts(texts[s:s + batch_size]).float(), dim=-1)
              for s in range(0, len(texts), batch_size)]
    return torch.cat(chunks)


def zero_shot_logits(image_embeddings: Any, classifier: Any) -> Any:
    """`100 * image @ classifier` for normalised image embeddings."""
    return LOGIT_SCALE * image_embeddings @ classifier


def zero_shot_predict(encoder: Encoder, prompts: PromptSet, images: Sequence[Any], batch_size: int = 64
                      ) -> tuple[list[str], Any]:
    """Predicted row labels and the (N, C) logits for `images`."""
    classifier = zero_shot_classifier(encoder, prompts)
    logits = zero_shot_logits(embed_images(encoder, images, batch_size, desc=f"zero-shot {prompts.name}"),
                              classifier)
    labels = prompts.labels
    return [labels[i] for i in logits.argmax(dim=1).tolist()], logits
