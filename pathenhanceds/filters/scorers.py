"""Image scorers: P(H&E) with the paper's four BiomedCLIP prompts, and image-caption similarity.

A `Scorer` maps a batch of PIL images (and, for similarity, their captions) to one float each.
The default implementation runs an open_clip model (BiomedCLIP by default); anything else that
follows the protocol (another model, a rule) can be passed to `score_sources` instead.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from PIL import Image
from tqdm.auto import tqdm

from ..errors import InputError, RecordError
from ..sources.base import BuildContext, Source, SourceRecord
from .scores_file import HE_THRESHOLD, ScoreMeta, ScoreRow, ScoreTable

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
PROMPT_TEMPLATE = "this is a photo of "
# The paper's labels, typo "muti" included: changing it would change the scores.
PAPER_LABELS = ("hematoxylin and eosin histopathology", "structure figure", "chart", "muti figure")
PAPER_PROMPTS = tuple(PROMPT_TEMPLATE + label for label in PAPER_LABELS)
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin")

_TEXT_ENCODER = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"  # BiomedCLIP's text tower and tokenizer


def offline_fix(model: str = DEFAULT_MODEL) -> str:
    """How to make a model's weights available without network access."""
    repo = model[len("hf-hub:"):] if model.startswith("hf-hub:") else "ORG/NAME"
    text = f" and `HF_HOME=/some/cache hf download {_TEXT_ENCODER} --include '*.json' --include '*.txt'`" if model == DEFAULT_MODEL else ""
    return (
        f"the weights are not available here. On a machine with Internet access run "
        f"`HF_HOME=/some/cache hf download {repo}`{text}, copy that cache folder here and set HF_HOME to it "
        "(with HF_HUB_OFFLINE=1); or put open_clip_config.json, the weights (open_clip_pytorch_model.bin) and, for "
        "a Hugging Face text tower, its config.json + tokenizer files (vocab.txt) in one folder and pass --model FOLDER"
    )


@runtime_checkable
class Scorer(Protocol):
    """Scores a batch of images (with optional captions, one per image) → one float per image."""

    model_id: str
    prompts: tuple[str, ...]

    def score(self, images: Sequence[Image.Image], texts: Sequence[str] | None = None) -> list[float]:
        """One score per image (`texts`: one caption per image, for scorers that need them)."""


# ------------------------------------------------------------------------------------------ open_clip
@dataclass
class OpenClipEncoder:
    """A loaded open_clip model with its preprocessing and tokenizer; embeddings are L2-normalised."""

    model: Any
    preprocess: Callable[[Image.Image], Any]
    tokenizer: Callable[[list[str]], Any]
    model_id: str
    device: str = "cpu"
    weights_sha256: str | None = None

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised image embeddings, one row per image."""
        import torch

        batch = torch.stack([self.preprocess(img.convert("RGB")) for img in images]).to(self.device)
        with torch.no_grad():
            return self.model.encode_image(batch, normalize=True).float()

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings, one row per text."""
        import torch

        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.no_grad():
            return self.model.encode_text(tokens, normalize=True).float()

    @property
    def logit_scale(self) -> float:
        """The model's learned softmax temperature (exp of its logit scale)."""
        return float(self.model.logit_scale.exp().item())


@dataclass
class HEScorer:
    """P(first prompt) under a softmax over `prompts` scaled by the model's logit scale (the paper's rule)."""

    encoder: OpenClipEncoder
    prompts: tuple[str, ...] = PAPER_PROMPTS
    positive: int = 0
    _text: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.prompts) < 2 or not 0 <= self.positive < len(self.prompts):
            raise ValueError("need at least two prompts and a valid positive index")

    @property
    def model_id(self) -> str:
        """The scoring model's id (recorded in the scores file)."""
        return self.encoder.model_id

    def probabilities(self, image_features: torch.Tensor) -> torch.Tensor:
        """Softmax over the prompts, one row per image."""
        if self._text is None:
            self._text = self.encoder.embed_texts(self.prompts)
        logits = self.encoder.logit_scale * image_features @ self._text.T
        return logits.softmax(dim=-1)

    def score_features(self, image_features: torch.Tensor) -> list[float]:
        """P(H&E) per image from precomputed image embeddings."""
        return self.probabilities(image_features)[:, self.positive].tolist()

    def score(self, images: Sequence[Image.Image], texts: Sequence[str] | None = None) -> list[float]:
        """P(H&E) per image."""
        if not images:
            return []
        return self.score_features(self.encoder.embed_images(images))


@dataclass
class SimilarityScorer:
    """Cosine similarity of each image with its own caption (OpenPath's top-K selection)."""

    encoder: OpenClipEncoder
    prompts: tuple[str, ...] = ()

    @property
    def model_id(self) -> str:
        """The scoring model's id (recorded in the scores file)."""
        return self.encoder.model_id

    def score_features(self, image_features: torch.Tensor, texts: Sequence[str]) -> list[float]:
        """Cosine similarity of each precomputed image embedding with its caption."""
        if len(texts) != len(image_features):
            raise ValueError("one caption per image is needed")
        return (image_features * self.encoder.embed_texts(texts)).sum(dim=-1).tolist()

    def score(self, images: Sequence[Image.Image], texts: Sequence[str] | None = None) -> list[float]:
        """Cosine similarity of each image with its caption."""
        if texts is None or len(texts) != len(images):
            raise ValueError("SimilarityScorer needs one caption per image")
        if not images:
            return []
        return self.score_features(self.encoder.embed_images(images), texts)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _local_dir(spec: str) -> Path | None:
    if spec.startswith("local-dir:"):
        return Path(spec[len("local-dir:"):]).expanduser()
    if spec.startswith("hf-hub:"):
        return None
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    raise InputError(f"model {spec!r} is neither a folder nor a Hub id", file=path,
                     fix="pass a folder holding open_clip_config.json + weights, or hf-hub:ORG/NAME")


def load_open_clip(model: str = DEFAULT_MODEL, device: str = "cpu") -> OpenClipEncoder:
    """Load an open_clip model: `hf-hub:ORG/NAME` (Hub or HF_HOME cache) or a local folder.

    A local folder holds `open_clip_config.json` and the weights; if its config names a Hugging
    Face text encoder (BiomedCLIP's PubMedBERT), that encoder's `config.json` and tokenizer files
    in the same folder are used instead of the Hub, so scoring works fully offline.
    """
    import open_clip

    folder = _local_dir(model)
    kwargs: dict[str, Any] = {}
    weights_sha = None
    if folder is None:
        name, model_id = model, model
    else:
        config_file = folder / "open_clip_config.json"
        if not config_file.is_file():
            raise InputError("model folder has no open_clip_config.json", file=folder, fix=offline_fix(model))
        weights = [folder / w for w in WEIGHT_FILES if (folder / w).is_file()]
        if not weights:
            raise InputError(f"model folder has no weights file ({', '.join(WEIGHT_FILES[:3])}, ...)",
                             file=folder, fix=offline_fix(model))
        try:
            config = json.loads(config_file.read_text())
            text_cfg = dict(config["model_cfg"]["text_cfg"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"open_clip_config.json is not a valid open_clip config ({exc})", file=config_file,
                             fix="use the open_clip_config.json of the model's Hub repository") from exc
        if "hf_model_name" in text_cfg and (folder / "config.json").is_file():
            # Build the text tower from the local config; its weights come with the CLIP checkpoint.
            kwargs["text_cfg"] = {**text_cfg, "hf_model_name": str(folder), "hf_model_pretrained": False}
        name, model_id = f"local-dir:{folder}", f"local-dir:{folder.name}"
        weights_sha = _file_sha256(weights[0])
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            name, device=device, require_pretrained=True, **kwargs
        )
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:  # hub, file and config errors all mean "this model cannot be loaded here"
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(f"cannot load the scoring model {model} ({type(exc).__name__}: {first})",
                         file=folder, fix=offline_fix(model)) from exc
    clip.eval()
    return OpenClipEncoder(clip, preprocess, tokenizer, model_id, device, weights_sha)


# ------------------------------------------------------------------------------------------- pipeline
def record_text(record: SourceRecord) -> str | None:
    """The caption to compare an image with: the record's `text` or `caption` field, if a string."""
    for key in ("text", "caption"):
        value = record.fields.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _decode(data: bytes, where: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError) as exc:
        raise RecordError(f"cannot decode image ({exc})", record=where, fix="pass --on-error skip") from exc
    return image.convert("RGB")


@dataclass
class _Pending:
    record: SourceRecord
    sha: str
    image: Image.Image | None
    text: str | None
    need_he: bool


@dataclass
class ScoreRun:
    """Scores of one run plus what was skipped."""

    table: ScoreTable
    images: int
    skipped: list[dict[str, str]]


def _key(record: SourceRecord) -> tuple[str, str]:
    return record.source, record.record_id


def _flush(batch: list[_Pending], he: Scorer | None, sim: Scorer | None, p_he: dict[str, float],
           similarity: dict[tuple[str, str], float]) -> None:
    he_items = [p for p in batch if p.need_he and p.image is not None]
    sim_items = [p for p in batch if p.text is not None and p.image is not None] if sim else []
    shared = (isinstance(he, HEScorer) and isinstance(sim, SimilarityScorer) and he.encoder is sim.encoder)
    if shared and (he_items or sim_items):
        # One image embedding serves both scores.
        assert isinstance(he, HEScorer) and isinstance(sim, SimilarityScorer)
        wanted = [p for p in batch if p.image is not None and (p.need_he or p.text is not None)]
        features = he.encoder.embed_images([p.image for p in wanted])  # type: ignore[misc]
        index = {id(p): i for i, p in enumerate(wanted)}
        if he_items:
            scores = he.score_features(features[[index[id(p)] for p in he_items]])
            p_he.update({p.sha: s for p, s in zip(he_items, scores, strict=True)})
        if sim_items:
            scores = sim.score_features(features[[index[id(p)] for p in sim_items]], [p.text for p in sim_items])
            similarity.update({_key(p.record): s for p, s in zip(sim_items, scores, strict=True)})
    else:
        if he is not None and he_items:
            scores = he.score([p.image for p in he_items])  # type: ignore[misc]
            p_he.update({p.sha: float(s) for p, s in zip(he_items, scores, strict=True)})
        if sim is not None and sim_items:
            scores = sim.score([p.image for p in sim_items], [p.text for p in sim_items])  # type: ignore[misc]
            similarity.update({_key(p.record): float(s) for p, s in zip(sim_items, scores, strict=True)})
    batch.clear()


def iter_source_records(
    sources: Mapping[str, Source], ctx: BuildContext, subsets: set[str] | None = None
) -> Iterator[tuple[Source, SourceRecord]]:
    """(source, record) pairs of every source, optionally only of the given subsets."""
    for name, source in sources.items():
        for rec in tqdm(source.records(ctx), desc=f"reading {name}", unit="rec", leave=False):
            if subsets is None or rec.subset in subsets:
                yield source, rec


def score_sources(
    sources: Mapping[str, Source],
    *,
    he: Scorer | None,
    similarity: Scorer | None = None,
    batch_size: int = 32,
    ctx: BuildContext | None = None,
    subsets: set[str] | None = None,
    threshold: float = HE_THRESHOLD,
) -> ScoreRun:
    """Score every record of `sources` (optionally only some subsets) and return a `ScoreTable`.

    Each image is loaded and scored for P(H&E) once even when several records share it (PathVQA
    asks several questions per image); similarity is computed per record that has a caption.
    """
    if he is None and similarity is None:
        raise ValueError("give at least one scorer")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, not {batch_size}", fix="pass --batch-size 32")
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"threshold must be in [0, 1), not {threshold}", fix="use e.g. --threshold 0.98")
    if he is not None and similarity is not None and he.model_id != similarity.model_id:
        raise ValueError("both scorers must use the same model (one model id goes into the scores file)")
    ctx = ctx or BuildContext()
    seen: dict[tuple[str, str], str] = {}  # (source, locator) -> sha: skip reloading shared images
    pending_he: set[str] = set()
    p_he: dict[str, float] = {}
    sim_scores: dict[tuple[str, str], float] = {}
    order: list[tuple[SourceRecord, str]] = []
    batch: list[_Pending] = []
    bar = tqdm(desc="scoring images", unit="img")
    for source, rec in iter_source_records(sources, ctx, subsets):
        text = record_text(rec) if similarity is not None else None
        key = (rec.source, repr(rec.locator))
        if key in seen and text is None:
            order.append((rec, seen[key]))
            continue
        where = f"{rec.source}/{rec.record_id}"
        try:
            payload = source.load_image(rec)
            sha = payload.sha256
            need_he = he is not None and sha not in p_he and sha not in pending_he
            image = _decode(payload.data, where) if (need_he or text is not None) else None
        except RecordError as err:
            ctx.bad_record(err)
            continue
        seen[key] = sha
        if need_he:
            pending_he.add(sha)
        order.append((rec, sha))
        batch.append(_Pending(rec, sha, image, text, need_he))
        if len(batch) >= batch_size:
            bar.update(len(batch))
            _flush(batch, he, similarity, p_he, sim_scores)
    bar.update(len(batch))
    _flush(batch, he, similarity, p_he, sim_scores)
    bar.close()
    rows = [ScoreRow(sha, rec.source, rec.record_id, rec.subset, p_he.get(sha),
                     sim_scores.get(_key(rec))) for rec, sha in order]
    if not rows:
        raise InputError("no records to score", fix="check the --source paths and --subset names")
    first = he if he is not None else similarity
    assert first is not None
    weights = getattr(getattr(first, "encoder", None), "weights_sha256", None)
    meta = ScoreMeta(model_id=first.model_id, prompts=tuple(he.prompts) if he is not None else (),
                     threshold=threshold, weights_sha256=weights,
                     extra={"scores": [n for n, s in (("p_he", he), ("similarity", similarity)) if s is not None]})
    return ScoreRun(ScoreTable(rows, meta), len({sha for _, sha in order}), list(ctx.skipped))
