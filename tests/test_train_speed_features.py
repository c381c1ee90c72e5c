"""Training speed features: pre-tokenized / cached batches (exactly TRL's), length-grouped sampling,
undecoded image columns, and the recipe fields that switch them. Behaviour only, no timings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from support.training_fixtures import tiny_model_cache, write_built_dataset
from transformers import AutoProcessor, TrainerCallback

from pathenhanceds.schema import FEATURES, make_messages
from pathinsight_models.families import get_family
from pathinsight_models.training import load_recipe, train
from pathinsight_models.training.collator import ExampleCache, VisionChatCollator, decode_images, same_batch
from pathinsight_models.training.data import (
    example_length,
    grouping_keys,
    length_grouped_sampler,
    prepare_split,
    without_image_decoding,
)
from pathinsight_models.training.trainer import training_chat_template

TURNS = [
    [("user", "Is this tissue malignant?"), ("assistant", "yes")],
    [("user", "Describe the histopathology image."),
     ("assistant", "The section shows crowded glands with enlarged, hyperchromatic nuclei and scattered mitoses.")],
    [("user", "What tissue is shown?"), ("assistant", "Colon mucosa."), ("user", "Any tumor?"),
     ("assistant", "No, it is benign."), ("user", "Which grade?"), ("assistant", "Not applicable.")],
    [("user", "Which class best describes this patch?"), ("assistant", "adipose")],
]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(24, 72)), int(rng.integers(24, 72))  # non-square, varied: varied token counts (Qwen)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _rows(n: int = 12) -> list[dict]:
    return [{"id": f"test/{i}", "source": "test", "task": "vqa", "images": [_image(i)],
             "messages": make_messages(TURNS[i % len(TURNS)]), "label": None, "answer_type": None,
             "image_sha256": [f"{i:064d}"], "license": "CC-BY-4.0"} for i in range(n)]


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.from_list(_rows(), features=FEATURES)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_cache(tmp_path_factory.mktemp("tiny"))


def _setup(tiny, family: str):
    processor = AutoProcessor.from_pretrained(tiny(family))
    return processor, training_chat_template(processor, get_family(family))


def _cached_collator(dataset, processor, template, *, assistant_only_loss=True, pad_to_multiple_of=None,
                     pixel_budget_mb=64):
    prepared = prepare_split(dataset, processor, template, None, measure=True, keep_features=True,
                             assistant_masks=assistant_only_loss, pixel_budget_mb=pixel_budget_mb)
    cache = ExampleCache()
    cache.add(prepared.ids, prepared.features, prepared.pixels)
    collator = VisionChatCollator(processor=processor, chat_template=template, assistant_only_loss=assistant_only_loss,
                                  pad_to_multiple_of=pad_to_multiple_of, cache=cache)
    return collator, prepared


# ------------------------------------------------------------------------------ cached batches


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "idefics3"])
@pytest.mark.parametrize(("assistant_only_loss", "pad_to_multiple_of"), [(True, None), (False, 8)])
def test_cached_batches_equal_trl_batches(tiny, dataset, family, assistant_only_loss, pad_to_multiple_of):
    processor, template = _setup(tiny, family)
    collator, prepared = _cached_collator(dataset, processor, template, assistant_only_loss=assistant_only_loss,
                                          pad_to_multiple_of=pad_to_multiple_of)
    assert prepared.pixels is not None and len(prepared.pixels) == len(dataset)
    reference = VisionChatCollator(processor=processor, chat_template=template,
                                   assistant_only_loss=assistant_only_loss, pad_to_multiple_of=pad_to_multiple_of)
    undecoded = without_image_decoding(dataset)
    for start in (0, 3, 8):
        rows = [dataset[i] for i in range(start, start + 4)]
        expected = reference(rows)  # TRL's collator on decoded rows
        assert same_batch(collator(rows), expected)
        assert same_batch(collator([undecoded[i] for i in range(start, start + 4)]), expected)
        if assistant_only_loss:
            assert (expected["labels"] == -100).any() and (expected["labels"] != -100).any()
    assert collator.stats == {"cached": 6, "tokenized": 0} and reference.stats["cached"] == 0


def test_uncached_and_ambiguous_rows_take_the_tokenizing_path(tiny, dataset):
    processor, template = _setup(tiny, "llava")
    prepared = prepare_split(dataset, processor, template, None, keep_features=True, assistant_masks=True)
    cache = ExampleCache()
    cache.add(prepared.ids[:6], prepared.features[:6])
    cache.add([prepared.ids[0]], [prepared.features[1]])  # the same id again: neither entry may be trusted
    assert len(cache) == 5 and cache.text("test/0") is None and cache.text("test/1") is not None
    collator = VisionChatCollator(processor=processor, chat_template=template, cache=cache)
    reference = VisionChatCollator(processor=processor, chat_template=template)
    for indices in ([0, 1, 2], [4, 5, 6], [1, 2, 3]):  # ambiguous id / never cached / all cached
        rows = [dataset[i] for i in indices]
        assert same_batch(collator(rows), reference(rows))
    assert collator.stats == {"cached": 1, "tokenized": 2}
    assert cache.pixels("test/1") is None and not cache.has_pixels(["test/1"])


def test_check_cache_switches_a_wrong_cache_off(tiny, dataset):
    processor, template = _setup(tiny, "llava")
    collator, prepared = _cached_collator(dataset, processor, template)
    rows = [dataset[i] for i in range(6)]
    assert collator.check_cache(rows, batch_size=4) and collator.cache is not None
    wrong = ExampleCache()  # every row gets its neighbour's tokens
    wrong.add(prepared.ids, prepared.features[1:] + prepared.features[:1])
    collator.cache = wrong
    assert not collator.check_cache(rows, batch_size=4) and collator.cache is None
    empty = VisionChatCollator(processor=processor, chat_template=template, cache=ExampleCache())
    assert not empty.check_cache(rows) and empty.cache is None  # nothing could be checked


# --------------------------------------------------------------------------- length pass, images


def test_prepare_split_measures_drops_and_respects_the_pixel_budget(tiny, dataset):
    processor, template = _setup(tiny, "qwen2_5_vl")
    lengths = [example_length(processor, template, r["images"], r["messages"]) for r in dataset]
    assert len(set(lengths)) > 3
    limit = sorted(lengths)[len(lengths) // 2]
    prepared = prepare_split(dataset, processor, template, limit, measure=True, keep_features=True,
                             pixel_budget_mb=64)
    kept = [i for i, n in enumerate(lengths) if n <= limit]
    assert prepared.lengths == [lengths[i] for i in kept]
    assert [d["index"] for d in prepared.dropped] == [i for i, n in enumerate(lengths) if n > limit]
    assert prepared.ids == [dataset[i]["id"] for i in kept] and len(prepared.dataset) == len(kept)
    assert [len(f["input_ids"]) for f in prepared.features] == prepared.lengths
    assert all(f["input_ids"].dtype == np.int32 for f in prepared.features)
    assert "assistant_masks" not in prepared.features[0]  # only asked for with assistant_masks=True
    assert len(prepared.pixels) == len(kept) and "image_grid_thw" in prepared.pixels[0]
    # Budget: none, or too small for the split -> no images kept at all (never part of a split).
    assert prepare_split(dataset, processor, template, None, keep_features=True).pixels is None
    assert prepare_split(dataset, processor, template, None, keep_features=True, pixel_budget_mb=1e-3).pixels is None
    # Nothing to measure and no limit: the split is returned untouched, without a pass.
    untouched = prepare_split(dataset, processor, template, None)
    assert untouched.dataset is dataset and untouched.lengths is None and untouched.features is None


def test_without_image_decoding_gives_the_same_pixels(dataset):
    undecoded = without_image_decoding(dataset)
    raw = undecoded[2]["images"][0]
    assert isinstance(raw, dict) and raw["bytes"]
    assert isinstance(dataset[2]["images"][0], Image.Image)  # the original still decodes
    assert undecoded._fingerprint != dataset._fingerprint
    assert np.array_equal(np.asarray(decode_images([raw])[0]), np.asarray(dataset[2]["images"][0]))
    no_images = dataset.remove_columns(["images"])
    assert without_image_decoding(no_images) is no_images


def test_length_grouped_sampler_is_seeded_per_epoch_and_groups_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(40, 400, 400).tolist()
    sampler = length_grouped_sampler(lengths, 8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(400)) and len(sampler) == 400
    assert first == list(length_grouped_sampler(lengths, 8, seed=3))  # same on every rank / after resuming
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(400))
    assert first != list(length_grouped_sampler(lengths, 8, seed=4))

    def padding(order: list[int]) -> float:
        batches = [[lengths[i] for i in order[k:k + 8]] for k in range(0, len(order), 8)]
        return 1 - sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)

    assert padding(first) < 0.1 and padding(rng.permutation(400).tolist()) > 0.2
    assert lengths[first[0]] == max(lengths)  # the longest batch first (out-of-memory shows up at once)


def test_length_grouping_does_not_batch_by_class_when_length_gives_the_class_away():
    """Nine classes whose answers differ by a token or two (like CRC names): grouping by exact total
    length makes one-class batches; bucketing the answer part mixes them, and batches come in random
    order rather than sorted."""
    rng = np.random.default_rng(0)
    classes = rng.permutation(np.repeat(np.arange(9), 40))
    answers = (2 + classes + (classes > 5) * 3).tolist()
    prompts = [230] * len(answers)
    lengths = [p + a for p, a in zip(prompts, answers, strict=True)]
    assert grouping_keys(lengths, answers, 32) == [262] * len(lengths)
    assert grouping_keys(lengths, answers, 1) == lengths and grouping_keys(lengths, None, 32) == lengths

    def batches(order: list[int]) -> list[list[int]]:
        return [[int(classes[i]) for i in order[k:k + 8]] for k in range(0, len(order), 8)]

    exact = batches(list(length_grouped_sampler(grouping_keys(lengths, answers, 1), 8, seed=0)))
    mixed = batches(list(length_grouped_sampler(grouping_keys(lengths, answers, 32), 8, seed=0)))
    assert np.mean([len(set(b)) for b in exact]) < 2.0  # exact lengths: batches follow the classes
    assert np.mean([len(set(b)) for b in mixed]) > 4.0
    firsts = [lengths[b[0]] for b in (list(length_grouped_sampler(lengths, 8, seed=0))[k:k + 8]
                                      for k in range(8, 360, 8))]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)
    # long answers are still grouped: within a bucket of 32 tokens
    long = [100 + a for a in range(0, 320, 10)]
    keys = grouping_keys(long, list(range(0, 320, 10)), 32)
    assert all(k - length < 32 for k, length in zip(keys, long, strict=True))


# ------------------------------------------------------------------------------ recipe and trainer


BASE = {"model_name_or_path": "some/model", "dataset_name": "some/data", "output_dir": "out"}


def test_recipe_fields_defaults_and_round_trip(tmp_path):
    recipe = load_recipe(BASE)
    args = recipe.args
    assert (args.group_by_length, args.answer_bucket_tokens, args.pretokenize, args.pixel_cache_mb) == (
        True, 32, True, 1024)
    off = load_recipe(BASE, {"pixel_cache_mb": 0}, ["--group_by_length", "false", "--pretokenize", "false"])
    assert (off.args.group_by_length, off.args.pretokenize, off.args.pixel_cache_mb) == (False, False, 0)
    again = load_recipe(off.save(tmp_path / "recipe.yaml"))
    assert again.to_dict() == off.to_dict() and again.args.group_by_length is False


class Batches(TrainerCallback):
    """Keeps the collator and sampler the training loop used."""

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        loader = getattr(train_dataloader, "base_dataloader", train_dataloader)
        self.collator = loader.collate_fn
        self.sampler = loader.batch_sampler.sampler  # accelerate swaps a RandomSampler for a seedable one


def _write_build(root: Path) -> Path:
    return write_built_dataset(root, {"train": _rows(12), "validation": _rows(16)[12:]})


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_pretokenized_training_equals_tokenized_training(tiny, tmp_path):
    data = _write_build(tmp_path / "data")
    common = {"model_name_or_path": str(tiny("llava")), "dataset_name": str(data), "method": "full",
              "max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "logging_steps": 1,
              "save_strategy": "no", "seed": 0, "dataset_test_split": "validation", "eval_strategy": "steps",
              "eval_steps": 3, "dataloader_num_workers": 0}
    runs = {}
    for name, extra in {"plain": {"pretokenize": False, "group_by_length": False},
                        "cached": {"group_by_length": False},
                        "grouped": {}}.items():
        seen = Batches()
        out = train({**common, **extra, "output_dir": str(tmp_path / name)}, callbacks=[seen])
        runs[name] = (out, seen)
    (plain, plain_seen), (cached, cached_seen), (grouped, grouped_seen) = runs.values()
    # Same rows in the same order: identical losses, train and eval, to the last bit.
    assert [e.get("loss") for e in _history(plain)] == [e.get("loss") for e in _history(cached)]
    assert [e.get("eval_loss") for e in _history(plain)] == [e.get("eval_loss") for e in _history(cached)]
    assert any("eval_loss" in e for e in _history(cached))
    assert plain_seen.collator.stats["cached"] == 0
    assert cached_seen.collator.stats["tokenized"] == 0 and cached_seen.collator.stats["cached"] >= 3
    assert isinstance(plain_seen.sampler, torch.utils.data.RandomSampler)
    assert type(grouped_seen.sampler).__name__ == "SeededLengthGroupedSampler"
    info = {name: json.loads((out / "run_info.json").read_text())["batching"] for name, (out, _) in runs.items()}
    assert info == {"plain": {"group_by_length": False, "pretokenized": False},
                    "cached": {"group_by_length": False, "pretokenized": True},
                    "grouped": {"group_by_length": True, "pretokenized": True}}
