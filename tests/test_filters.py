"""Image scoring and filtering: a tiny randomly initialised open_clip model (ViT + BERT text tower, the
architectures BiomedCLIP uses, with a locally trained WordPiece tokenizer) saved as a local model folder,
plus a rule-based scorer implementing the `Scorer` protocol for the selection logic."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pathenhanceds.errors import InputError
from pathenhanceds.filters import (
    DEFAULT_MODEL,
    PAPER_PROMPTS,
    HEScorer,
    Scorer,
    ScoreTable,
    SimilarityScorer,
    load_open_clip,
    load_scores,
    read_scores,
    score_sources,
    select_he,
    select_top_k,
    write_scores,
)
from pathenhanceds.filters.scores_file import ScoreMeta, ScoreRow
from pathenhanceds.images import payload_from_file
from pathenhanceds.sample import SampleSizes, write_sample
from pathenhanceds.sources import BuildContext, Source, SourceRecord, get_source


# ---------------------------------------------------------------------------------------- fixtures
def _write_tiny_model(folder: Path) -> None:
    """open_clip_config.json + random weights for a tiny CustomTextCLIP (ViT image tower, BERT text tower)."""
    import open_clip
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, PreTrainedTokenizerFast

    folder.mkdir(parents=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = list(PAPER_PROMPTS) + ["tumour cells with large nuclei in the stroma", "a synthetic caption"]
    tok.train_from_iterator(corpus * 3, trainers.WordPieceTrainer(
        vocab_size=150, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(folder)
    BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=64).save_pretrained(folder)
    # Same shape of config as BiomedCLIP's: the text tower names a Hub BERT that the loader must NOT fetch.
    text_cfg = {"hf_model_name": "pathinsight-test/not-on-any-hub", "hf_tokenizer_name": "pathinsight-test/not-on-any-hub",
                "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 32}
    config = {"model_cfg": {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                                            "head_width": 16, "patch_size": 16},
                            "text_cfg": text_cfg},
              "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False,
                                   text_cfg={**text_cfg, "hf_model_name": str(folder), "hf_model_pretrained": False})
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clip") / "tiny-biomedclip"
    _write_tiny_model(folder)
    return folder


@pytest.fixture(scope="module")
def encoder(tiny_model):
    return load_open_clip(str(tiny_model))


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> dict[str, Path]:
    sizes = SampleSizes(pcam_train=4, pcam_valid=2, pcam_test=2, crc_val_per_class=1, crc_train_per_class=1,
                        bladder_train=2, bladder_test=1, pathvqa_images=(3, 2, 2), textbook_images=6)
    return write_sample(tmp_path_factory.mktemp("raw") / "sample", seed=0, sizes=sizes)


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB") for _ in range(n)]


class CaptionSource(Source):
    """A minimal reader over `captions.jsonl` ({"id", "text", "image"}), the shape of hydrated OpenPath."""

    name = "captions"
    license = "cc0-1.0"

    def records(self, ctx):
        for line in (self.path / "captions.jsonl").read_text().splitlines():
            item = json.loads(line)
            yield SourceRecord(self.name, item["id"], "all", str(self.path / item["image"]), {"text": item["text"]})

    def load_image(self, record):
        return payload_from_file(record.locator)


@pytest.fixture()
def captions(tmp_path) -> CaptionSource:
    folder = tmp_path / "captions"
    folder.mkdir()
    lines = []
    for i, image in enumerate(_images(5, seed=3)):
        image.save(folder / f"{i}.png")
        text = None if i == 4 else f"a synthetic caption number {i}"
        lines.append(json.dumps({"id": f"tweet{i}", "text": text, "image": f"{i}.png"}))
    lines.append(json.dumps({"id": "tweet5", "text": "tumour cells with large nuclei", "image": "0.png"}))
    (folder / "captions.jsonl").write_text("\n".join(lines))
    return CaptionSource(folder)


class RedFractionScorer:
    """A rule, not a model: P = the mean red channel share, so the expected selection can be computed."""

    model_id = "rule:red-fraction"
    prompts = ("red", "not red")

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def score(self, images, texts=None):
        out = []
        for img in images:
            arr = np.asarray(img.convert("RGB"), dtype=np.float64)
            self.seen.append(arr.tobytes())
            out.append(float(arr[..., 0].sum() / max(arr.sum(), 1.0)))
        return out


def red_fraction(data: bytes) -> float:
    arr = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
    return float(arr[..., 0].sum() / max(arr.sum(), 1.0))


# ------------------------------------------------------------------------------------------ model
def test_paper_prompts_and_default_model():
    assert PAPER_PROMPTS == (
        "this is a photo of hematoxylin and eosin histopathology",
        "this is a photo of structure figure",
        "this is a photo of chart",
        "this is a photo of muti figure",
    )
    assert DEFAULT_MODEL == "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


def test_local_model_folder_loads_offline(encoder, tiny_model):
    assert type(encoder.model).__name__ == "CustomTextCLIP"
    assert encoder.model_id == "local-dir:tiny-biomedclip"
    weights = (tiny_model / "open_clip_model.safetensors").read_bytes()
    assert encoder.weights_sha256 == hashlib.sha256(weights).hexdigest()
    assert isinstance(HEScorer(encoder), Scorer) and isinstance(SimilarityScorer(encoder), Scorer)


def test_he_scorer_is_softmax_over_the_four_prompts_with_logit_scale(encoder):
    import torch

    images = _images(3)
    model = encoder.model
    pixels = torch.stack([encoder.preprocess(i) for i in images])
    original = model.logit_scale.detach().clone()
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(encoder.tokenizer(list(PAPER_PROMPTS))), dim=-1)
        try:
            for scale in (float(model.logit_scale.exp()), 50.0):
                model.logit_scale.fill_(np.log(scale))
                expected = (scale * img @ txt.T).softmax(-1)[:, 0]
                got = HEScorer(encoder).score(images)
                assert got == pytest.approx(expected.tolist(), abs=1e-5)
                assert all(0.0 < p < 1.0 for p in got)
        finally:
            model.logit_scale.copy_(original)
        probs = HEScorer(encoder).probabilities(img)
        assert probs.shape == (3, 4) and probs.sum(-1).tolist() == pytest.approx([1.0] * 3, abs=1e-5)


def test_similarity_scorer_is_cosine_with_own_caption(encoder):
    import torch

    images, texts = _images(2, seed=1), ["tumour cells with large nuclei", "a synthetic caption"]
    got = SimilarityScorer(encoder).score(images, texts)
    with torch.no_grad():
        img = encoder.model.encode_image(torch.stack([encoder.preprocess(i) for i in images]))
        txt = encoder.model.encode_text(encoder.tokenizer(texts))
    expected = torch.nn.functional.cosine_similarity(img, txt).tolist()
    assert got == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError):
        SimilarityScorer(encoder).score(images, texts[:1])


def test_missing_weights_or_config_is_an_input_error(tiny_model, tmp_path):
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_model, no_weights)
    (no_weights / "open_clip_model.safetensors").unlink()
    with pytest.raises(InputError) as err:
        load_open_clip(str(no_weights))
    assert "no weights" in str(err.value) and "HF_HOME" in err.value.fix and "--model" in err.value.fix
    (no_weights / "open_clip_config.json").unlink()
    with pytest.raises(InputError, match="open_clip_config.json"):
        load_open_clip(f"local-dir:{no_weights}")
    with pytest.raises(InputError, match="neither a folder nor a Hub id"):
        load_open_clip(str(tmp_path / "missing"))


def test_hub_model_that_cannot_be_downloaded_is_an_input_error():
    # The test session's Hub is a loopback server without BiomedCLIP: the same failure as no network.
    with pytest.raises(InputError) as err:
        load_open_clip(DEFAULT_MODEL)
    assert "BiomedCLIP" in str(err.value)
    assert "HF_HOME" in err.value.fix and "hf download" in err.value.fix


# -------------------------------------------------------------------------------------- pipeline
def test_score_cli_writes_scores_keyed_by_sha(encoder, tiny_model, raw, tmp_path):
    from pathinsight_models.cli import main

    out = tmp_path / "scores.parquet"
    argv = ["data", "score", "--source", f"pathvqa={raw['pathvqa']}", "--subset", "textbook",
            "--model", str(tiny_model), "--batch-size", "4", "--output", str(out)]
    assert main(argv) == 0
    assert main(argv) == 2  # refuses to overwrite
    table = read_scores(out, expected_model="local-dir:tiny-biomedclip", expected_prompts=PAPER_PROMPTS)
    assert table.threshold == 0.98 and table.meta.weights_sha256 == encoder.weights_sha256
    source = get_source("pathvqa")(raw["pathvqa"])
    records = [r for r in source.records(BuildContext()) if r.subset == "textbook"]
    assert [(r.source, r.record_id) for r in table.rows] == [(r.source, r.record_id) for r in records]
    assert len(table.shas()) == 6 and len(table) == 18  # three questions per image
    scorer = HEScorer(encoder)
    for rec in records:
        payload = source.load_image(rec)
        row = table.for_record(rec.source, rec.record_id)
        assert row.image_sha256 == payload.sha256 and row.similarity is None  # questions are not captions
        expected = scorer.score([Image.open(io.BytesIO(payload.data))])[0]
        assert row.p_he == pytest.approx(expected, abs=1e-5) == table.p_he(payload.sha256)
    schema_meta = json.loads(pq.read_schema(out).metadata[b"pathinsight.scores"])
    assert schema_meta["model_id"] == "local-dir:tiny-biomedclip" and schema_meta["prompts"] == list(PAPER_PROMPTS)


def test_score_sources_scores_each_image_once_and_captions_per_record(captions):
    he, sim = RedFractionScorer(), RedFractionScorer()
    sim.score = lambda images, texts: [float(len(t)) for t in texts]  # similarity := caption length
    run = score_sources({"captions": captions}, he=he, similarity=sim, batch_size=2)
    table = run.table
    assert run.images == 5 and len(table) == 6 and len(he.seen) == 5  # tweet5 reuses image 0
    image_of = {f"tweet{i}": i for i in range(5)} | {"tweet5": 0}
    for row in table.rows:
        data = (captions.path / f"{image_of[row.record_id]}.png").read_bytes()
        assert row.p_he == pytest.approx(red_fraction(data))
    assert table.for_record("captions", "tweet4").similarity is None
    assert table.for_record("captions", "tweet5").similarity == len("tumour cells with large nuclei")
    assert table.similarity(table.for_record("captions", "tweet0").image_sha256) == len("tumour cells with large nuclei")
    assert table.model_id == "rule:red-fraction" and table.prompts == ("red", "not red")


def test_score_sources_shares_one_embedding_for_both_scores(encoder, captions):
    calls = []
    original = encoder.embed_images
    encoder.embed_images = lambda images: calls.append(len(images)) or original(images)
    try:
        run = score_sources({"captions": captions}, he=HEScorer(encoder), similarity=SimilarityScorer(encoder),
                            batch_size=8)
    finally:
        del encoder.embed_images
    assert calls == [6]  # one pass over the batch: 5 images + the re-used image for tweet5's caption
    row = run.table.for_record("captions", "tweet1")
    image = Image.open(captions.path / "1.png")
    assert row.p_he == pytest.approx(HEScorer(encoder).score([image])[0], abs=1e-5)
    assert row.similarity == pytest.approx(
        SimilarityScorer(encoder).score([image], ["a synthetic caption number 1"])[0], abs=1e-5)


def test_he_filter_on_sample_textbook_with_rule_scorer(raw, tmp_path):
    source = get_source("pathvqa")(raw["pathvqa"])
    run = score_sources({"pathvqa": source}, he=RedFractionScorer(), subsets={"textbook"}, threshold=0.5)
    path = write_scores(run.table, tmp_path / "s.parquet")
    table = load_scores(path)
    records = [r for r in source.records(BuildContext()) if r.subset == "textbook"]
    fractions = {r.record_id: red_fraction(source.load_image(r).data) for r in records}
    threshold = float(np.median(list(fractions.values())))  # splits the six images
    selection = select_he(records, table, threshold=threshold)
    assert [r.record_id for r in selection.kept] == [r.record_id for r in records if fractions[r.record_id] > threshold]
    assert 0 < len(selection.kept) < len(records) and len(selection.kept) + len(selection.dropped) == len(records)
    assert selection.summary() == {"rule": f"P(H&E) > {threshold}", "kept": len(selection.kept),
                                   "dropped": len(selection.dropped), "missing": 0}
    assert select_he(records, table, threshold=0.999).kept == []
    with pytest.raises(InputError, match="threshold"):
        select_he(records, table, threshold=1.5)


# ------------------------------------------------------------------------------- file validation
def _table(rows, model="m", prompts=PAPER_PROMPTS):
    return ScoreTable([ScoreRow(*r) for r in rows], ScoreMeta(model_id=model, prompts=tuple(prompts)))


def _rec(source, rid):
    return SourceRecord(source, rid, "x", None)


def test_read_scores_refuses_other_model_and_other_images(tmp_path):
    path = write_scores(_table([("a" * 64, "s", "1", "x", 0.99, None), ("b" * 64, "s", "2", "x", 0.5, 0.1)],
                               model="hf-hub:other/model"), tmp_path / "scores.parquet")
    with pytest.raises(InputError) as err:
        read_scores(path, expected_model=DEFAULT_MODEL)
    assert str(path) in str(err.value) and "other/model" in str(err.value) and "--model" in err.value.fix
    with pytest.raises(InputError) as err:
        read_scores(path, expected_shas=["a" * 64, "c" * 64])
    assert "1 image(s)" in str(err.value) and err.value.file == str(path) and "pathinsight data score" in err.value.fix
    with pytest.raises(InputError, match="other prompts"):
        read_scores(path, expected_prompts=("x", "y"))
    table = read_scores(path, expected_shas=["a" * 64])
    assert table.he_keep("a" * 64) and not table.he_keep("b" * 64) and table.he_keep("b" * 64, threshold=0.4)


def test_read_scores_refuses_foreign_or_missing_files(tmp_path):
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"image_sha256": ["a"]}), plain)
    with pytest.raises(InputError, match="not a PathInsight scores file"):
        load_scores(plain)
    with pytest.raises(InputError, match="does not exist"):
        load_scores(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="not a readable parquet"):
        load_scores(tmp_path / "junk.parquet")


def test_selections_missing_records_and_changed_images(tmp_path):
    table = _table([("a" * 64, "s", "1", "x", 0.99, 0.3), ("b" * 64, "s", "2", "x", 0.10, 0.3),
                    ("c" * 64, "s", "3", "x", 0.985, 0.9), ("d" * 64, "s", "4", "x", 0.999, None)])
    recs = [_rec("s", str(i)) for i in (4, 3, 2, 1)]
    assert [r.record_id for r in select_he(recs, table).kept] == ["4", "3", "1"]
    top = select_top_k(recs, table, k=2)
    assert [r.record_id for r in top.kept] == ["3", "1"]  # input order; tie 0.3/0.3 broken by record id
    assert [r.record_id for r in top.dropped] == ["4", "2"]
    assert [r.record_id for r in select_top_k(recs, table, k=10).kept] == ["3", "2", "1"]  # no caption → out
    assert [r.record_id for r in select_top_k(recs, table, k=1, by="p_he").kept] == ["4"]
    with pytest.raises(InputError, match="no score for 1 record"):
        select_he([*recs, _rec("s", "9")], table)
    assert [r.record_id for r in select_he([*recs, _rec("s", "9")], table, missing="drop").missing] == ["9"]
    table.verify_image("s", "1", "a" * 64)
    with pytest.raises(InputError, match="changed since it was scored"):
        table.verify_image("s", "1", "e" * 64)
    with pytest.raises(InputError, match="scored twice"):
        _table([("a" * 64, "s", "1", "x", 0.9, None), ("b" * 64, "s", "1", "x", 0.9, None)])
