"""CLIP track outputs and publishing: the output guard on every folder-writing CLIP command, `push model` of a
CLIP (zero-shot card, model-index from `clip eval`) and of an assembled VLM (lineage), the shipped benchmark
prompt sets, and a benchmark folder brought in with `data import` and scored zero-shot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from support.clip_fixtures import write_open_clip
from support.hub_fixtures import TEST_TOKEN
from support.hub_server import HubServer, parse_card_data
from test_clip import write_textures

from pathenhanceds.errors import InputError
from pathinsight_models.cli import main

torch.set_num_threads(1)

BASE_CARD = "---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: zero-shot-image-classification\n---\n"
LM_CARD = "---\nlicense: mit\nlibrary_name: transformers\npipeline_tag: text-generation\n---\n"
SMALL = ["--hidden-size", "32", "--projection-dim", "32", "--intermediate-size", "64"]


@pytest.fixture(scope="module")
def textures(tmp_path_factory) -> Path:
    return write_textures(tmp_path_factory.mktemp("textures"), per_split=(8, 2, 3))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from pathinsight_models.clip.tiny import save_tiny_clip, save_tiny_lm

    root = tmp_path_factory.mktemp("tiny")
    return {"clip": save_tiny_clip("clip", root / "clip", seed=0), "lm": save_tiny_lm(root / "lm")}


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory) -> Path:
    """A random tiny open_clip plain ViT in open_clip's hub layout."""
    cfg = {"embed_dim": 16, "quick_gelu": True,
           "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    return write_open_clip(tmp_path_factory.mktemp("openclip"), cfg)


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def _train(model: Path, data: Path, out: Path, **extra):
    from pathinsight_models.clip.train import train_clip

    return train_clip({"model_name_or_path": str(model), "dataset_name": str(data), "output_dir": str(out),
                       "max_steps": 1, "per_device_train_batch_size": 8, "save_strategy": "no", "logging_steps": 1,
                       "disable_tqdm": True, "seed": 0, **extra})


def _commands(tmp_path: Path, textures: Path, tiny: dict[str, Path], open_clip_dir: Path) -> dict[str, object]:
    """kind -> function(output, *extra argv) running the CLI command that writes that kind."""
    return {
        "clip-tiny": lambda out, *x: main(["clip", "tiny", "--output", str(out), *SMALL, *x]),
        "clip-eval": lambda out, *x: main(["clip", "eval", "--model", str(tiny["clip"]), "--data", str(textures),
                                           "--tasks", "crc100k", "--output", str(out), "--bootstrap", "0",
                                           "--limit", "9", *x]),
        "assembled": lambda out, *x: main(["models", "assemble", "--vision", str(tiny["clip"]), "--language",
                                           str(tiny["lm"]), "--output", str(out), *x]),
        "clip-convert": lambda out, *x: main(["clip", "convert", "--model", str(open_clip_dir), "--output", str(out),
                                              *x]),
    }


# ------------------------------------------------------------------------------------------ output guard


def test_clip_commands_never_replace_a_folder_they_did_not_write(tmp_path, textures, tiny, open_clip_dir, capsys):
    for kind, run in _commands(tmp_path, textures, tiny, open_clip_dir).items():
        mine = tmp_path / f"mine-{kind}"
        mine.mkdir()
        (mine / "notes.txt").write_text("a week of annotations")
        before = tree(mine)
        assert run(mine, "--overwrite") == 2, kind
        err = capsys.readouterr().err
        assert "is not an earlier" in err and "delete it yourself" in err, (kind, err)
        assert tree(mine) == before, kind
    mine = tmp_path / "mine-train"
    mine.mkdir()
    (mine / "results.csv").write_text("1,2\n")
    with pytest.raises(InputError, match="not an earlier `pathinsight clip train`"):
        _train(tiny["clip"], textures, mine, overwrite=True)
    (mine / "checkpoint-1").mkdir()  # looks resumable, but is not a `clip train` run
    with pytest.raises(InputError, match="not an earlier"):
        _train(tiny["clip"], textures, mine, resume=True)
    assert (mine / "results.csv").read_text() == "1,2\n"
    assert not leftovers(tmp_path)


def test_clip_commands_replace_their_own_earlier_output(tmp_path, textures, tiny, open_clip_dir, capsys):
    from pathenhanceds.atomic import OUTPUT_KINDS

    commands = _commands(tmp_path, textures, tiny, open_clip_dir)
    for kind, run in commands.items():
        out = tmp_path / kind
        assert run(out) == 0, kind
        assert OUTPUT_KINDS.get(kind).recognise(out), kind
        (out / "stale.txt").write_text("from an earlier run")
        assert run(out) == 2, kind  # exists: --overwrite needed
        assert "--overwrite" in capsys.readouterr().err
        assert run(out, "--overwrite") == 0, kind
        assert not (out / "stale.txt").exists() and OUTPUT_KINDS.get(kind).recognise(out), kind
    # one kind never replaces another's output
    assert commands["assembled"](tmp_path / "clip-eval", "--overwrite") == 2
    assert "not an earlier `pathinsight models assemble` output" in capsys.readouterr().err
    # never an input: the evaluated data, a folder inside the vision model
    assert commands["clip-eval"](textures, "--overwrite") == 2
    assert "is the input" in capsys.readouterr().err
    assert commands["assembled"](tiny["clip"] / "vlm") == 2
    assert "lies inside the input" in capsys.readouterr().err
    # training: marker first, an earlier run replaced with overwrite, resumable only when it is ours
    run = _train(tiny["clip"], textures, tmp_path / "run")
    info = json.loads((run / "run_info.json").read_text())
    assert info["generator"] == "pathinsight_models.clip.train" and info["status"] == "finished"
    (run / "stale.txt").write_text("x")
    with pytest.raises(InputError, match="already exists"):
        _train(tiny["clip"], textures, run)
    _train(tiny["clip"], textures, run, overwrite=True)
    assert not (run / "stale.txt").exists()
    with pytest.raises(InputError, match="not an earlier `pathinsight clip train`"):
        _train(tiny["clip"], textures, tmp_path / "clip-eval", overwrite=True)
    with pytest.raises(InputError, match="is the input"):
        _train(tiny["clip"], textures, textures, overwrite=True)
    assert not leftovers(tmp_path)


def test_run_kind_from_markers_and_config(tmp_path, tiny):
    from pathinsight_models.publish.clip import run_kind

    assert run_kind(tiny["clip"]) == "clip"  # clip tiny marker
    assert run_kind(tiny["lm"]) == "sft"  # a causal LM is not a CLIP
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    assert run_kind(plain) == "clip"  # no marker: the config says it


# ------------------------------------------------------------------------------------------ prompt sets


BENCHMARKS = {"lc25000": 5, "bach": 4, "sicapv2": 4, "wsss4luad": 3, "osteo": 3, "skincancer": 16, "mhist": 2}


def test_benchmark_prompt_sets_are_shipped():
    from pathinsight_models.clip.zeroshot import get_prompt_set

    for name, n in BENCHMARKS.items():
        prompts = get_prompt_set(name)
        assert len(prompts.classes) == n and prompts.source == name and len(prompts.templates) == 22, name
        assert all(len(s) >= 2 for s in prompts.classes.values()), name  # synonyms, CONCH style
    assert set(get_prompt_set("bach").classes) == {"Benign", "InSitu", "Invasive", "Normal"}  # BACH folder names
    assert set(get_prompt_set("sicapv2").classes) == {"NC", "G3", "G4", "G5"}
    assert set(get_prompt_set("mhist").classes) == {"HP", "SSA"}
    assert "prostate cancer, gleason pattern four" in get_prompt_set("sicapv2").classes["G4"]  # commas kept


def test_bach_folder_imported_and_scored_zero_shot(tmp_path, tiny, capsys):
    """BACH's distributed layout (Photos/<class>/*.tif) through `data import`, then `clip eval --tasks bach`."""
    rng = np.random.default_rng(0)
    photos = tmp_path / "ICIAR2018_BACH_Challenge" / "Photos"
    for k, label in enumerate(("Benign", "InSitu", "Invasive", "Normal")):
        (photos / label).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 60, (40, 48, 3), dtype=np.uint8) + np.uint8(40 * k)
            Image.fromarray(pixels).save(photos / label / f"{label[0].lower()}{i:03d}.tif")
    ds = tmp_path / "bach"
    assert main(["data", "import", "--format", "imagefolder", "--input", str(photos), "--output", str(ds),
                 "--name", "bach", "--license", "cc-by-nc-nd-4.0"]) == 0
    out = tmp_path / "bach-eval"
    assert main(["clip", "eval", "--model", str(tiny["clip"]), "--data", str(ds), "--tasks", "bach", "--output",
                 str(out), "--bootstrap", "0"]) == 0
    capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    zs = results["tasks"]["bach"]["zero_shot"]
    assert zs["n"] == 4 and set(zs["per_class"]) == {"Benign", "InSitu", "Invasive", "Normal"}  # 10% per class
    assert (out / "bach_confusion.png").is_file()


# ------------------------------------------------------------------------------------------ Hub


@pytest.fixture(scope="module")
def clip_env(hub: HubServer, sample_build, tiny, tmp_path_factory) -> dict:
    """Tiny CLIP base + tiny LM + dataset on the test Hub, a `clip train` run on the build and its `clip eval`."""
    from huggingface_hub import HfApi

    from pathinsight_models.clip.evaluate import evaluate_clip
    from pathinsight_models.publish import push_dataset

    root = tmp_path_factory.mktemp("push-clip")
    api = HfApi()
    ids = {}
    for key, card in (("clip", BASE_CARD), ("lm", LM_CARD)):
        ids[key] = hub.new_repo_id(f"tiny-{key}")
        api.create_repo(ids[key])
        api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=ids[key])
        api.upload_folder(repo_id=ids[key], folder_path=str(tiny[key]))
    data_id = hub.new_repo_id("PathEnhanceDS")
    push_dataset(sample_build.output, data_id)
    run = _train(tiny["clip"], sample_build.output, root / "run", class_captions=True, max_steps=3,
                 learning_rate=1e-3)
    evaluate_clip(run, sample_build.output, ["crc100k", "pcam", "retrieval"], root / "eval",
                  linear_probe_tasks=True, n_resamples=20, limit=24, batch_size=16)
    return {"root": root, "ids": ids, "data_id": data_id, "run": run, "results": root / "eval" / "results.json"}


@pytest.mark.slow
def test_push_clip_with_zero_shot_card_and_reload(hub: HubServer, clip_env: dict, tiny):
    from transformers import AutoModel, AutoProcessor

    from pathinsight_models.publish.model import push_model
    from pathinsight_models.publish.model_card import combine_licenses

    repo_id = hub.new_repo_id("pathclip-tiny")
    base_id, data_id = clip_env["ids"]["clip"], clip_env["data_id"]
    with pytest.raises(InputError, match="--base-model-id"):  # trained from a local folder: name its Hub id
        push_model(clip_env["run"], repo_id, results=clip_env["results"], dataset_id=data_id)
    result = push_model(clip_env["run"], repo_id, results=clip_env["results"], base_model_id=base_id,
                        dataset_id=data_id)
    files = hub.files(repo_id)
    assert {"model.safetensors", "config.json", "README.md", "clip_args.json", "metrics.jsonl",
            "clip_eval_results.json", "tokenizer.json", "processor_config.json"} <= set(files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))] and "run_info.json" not in files
    for name, content in files.items():
        assert TEST_TOKEN.encode() not in content and str(clip_env["root"]).encode() not in content, name
    args = json.loads(files["clip_args.json"])
    assert args["model_name_or_path"] == base_id and args["dataset_name"] == data_id

    card = parse_card_data(files["README.md"])
    dataset_card = parse_card_data(hub.files(data_id, "dataset")["README.md"])
    assert card["pipeline_tag"] == "zero-shot-image-classification" and card["library_name"] == "transformers"
    assert card["base_model"] == base_id and card["datasets"] == [data_id]
    assert card["license"] == result.license == combine_licenses(["apache-2.0", dataset_card["license"]])
    results = json.loads(clip_env["results"].read_text())
    expected = set()
    for task in ("crc100k", "pcam"):
        entry = results["tasks"][task]
        expected |= {(f"{task}_{m}", round(entry["zero_shot"][m], 6))
                     for m in ("accuracy", "balanced_accuracy", "weighted_f1")}
        expected |= {(f"{task}_linear_probe_{m}", round(entry["linear_probe"][m], 6))
                     for m in ("accuracy", "balanced_accuracy")}
    expected |= {(f"{k.split('_R@')[0]}_recall@{k.split('_R@')[1]}", round(v, 6))
                 for k, v in results["tasks"]["retrieval"].items() if "_R@" in k}
    index = card["model-index"][0]
    got = {(m["type"], m["value"]) for r in index["results"] for m in r["metrics"]}
    assert index["name"] == repo_id and got == expected and len(expected) == 16
    assert {r["task"]["type"] for r in index["results"]} == {
        "zero-shot-image-classification", "image-classification", "image-feature-extraction"}
    assert {r["dataset"]["type"] for r in index["results"]} == {data_id}

    # The Hub copy loads with the Auto classes and scores exactly like the local run.
    remote, processor = AutoModel.from_pretrained(repo_id), AutoProcessor.from_pretrained(repo_id)
    local = AutoModel.from_pretrained(clip_env["run"])
    assert type(remote).__name__ == "CLIPModel" and type(processor).__name__ == "CLIPProcessor"
    inputs = processor(text=["an H&E image of tumor.", "adipose"], images=Image.new("RGB", (40, 40), (200, 90, 160)),
                       return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(remote(**inputs).logits_per_image, local(**inputs).logits_per_image, rtol=0, atol=0)

    # `pathinsight eval` results are not zero-shot results
    sft = clip_env["root"] / "sft_results.json"
    sft.write_text(json.dumps({"schema_version": 1, "versions": {"pathinsight": "x"}, "tasks": {}}))
    with pytest.raises(InputError, match="not from `pathinsight clip eval`"):
        push_model(clip_env["run"], repo_id, results=sft, base_model_id=base_id, dataset_id=data_id)


@pytest.mark.slow
def test_push_assembled_vlm_lists_both_parents(hub: HubServer, clip_env: dict, tiny, capsys):
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

    from pathinsight_models.clip.assemble import assemble_llava, vision_tower
    from pathinsight_models.publish.model import push_model
    from pathinsight_models.publish.model_card import combine_licenses

    vlm = assemble_llava(tiny["clip"], tiny["lm"], clip_env["root"] / "vlm")
    repo_id = hub.new_repo_id("pathclip-llava-tiny")
    with pytest.raises(InputError, match="--vision-model-id"):
        push_model(vlm, repo_id)
    vision_id, lm_id = clip_env["ids"]["clip"], clip_env["ids"]["lm"]
    assert main(["push", "model", str(vlm), "--repo-id", repo_id, "--vision-model-id", vision_id,
                 "--language-model-id", lm_id]) == 0
    capsys.readouterr()
    files = hub.files(repo_id)
    card = parse_card_data(files["README.md"])
    assert card["base_model"] == [vision_id, lm_id]
    assert card["license"] == combine_licenses(["apache-2.0", "mit"])
    assert card["library_name"] == "transformers" and card["pipeline_tag"] == "image-text-to-text"
    lineage = json.loads(files["assembly.json"])
    assert lineage["vision"] == vision_id and lineage["language"] == lm_id and "generator" not in lineage
    assert "{% generation %}" in files["chat_template.jinja"].decode()
    for name, content in files.items():
        assert str(clip_env["root"]).encode() not in content, name
    model = AutoModelForImageTextToText.from_pretrained(repo_id)
    assert AutoProcessor.from_pretrained(repo_id).num_additional_image_tokens == 1
    source = AutoModel.from_pretrained(tiny["clip"]).vision_model.state_dict()
    target = vision_tower(model).state_dict()
    assert all(torch.equal(source[k], target[k]) for k in source)
    assert yaml.safe_load(files["README.md"].decode().split("---")[1])["base_model"] == [vision_id, lm_id]


def test_demo_clip_flag_goes_through_the_guard(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "slides.txt").write_text("do not delete")
    assert main(["demo", "--clip", "--output", str(mine)]) == 2  # not an earlier demo: refused before any work
    assert "not an earlier `pathinsight demo` output" in capsys.readouterr().err
    assert (mine / "slides.txt").read_text() == "do not delete"
