"""Pathology CLIP track, offline with tiny real classes: tiny CLIP/SigLIP, contrastive training, zero-shot
(checked against clip_benchmark), retrieval, linear probe, open_clip conversion, LLaVA assembly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from support.clip_fixtures import write_open_clip

from pathenhanceds.errors import InputError
from pathenhanceds.sample.textures import texture
from pathenhanceds.schema import FEATURES, make_messages

torch.set_num_threads(1)

CODES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")  # crc100k.yaml class order


def write_textures(root: Path, per_split: tuple[int, int, int] = (24, 4, 8), size: int = 32, seed: int = 0) -> Path:
    """PathEnhanceDS-layout dataset: CRC classification rows (procedural textures per class) and captioning
    rows with a unique caption per image, train/validation/test."""
    from pathinsight_models.clip.zeroshot import get_prompt_set

    names = get_prompt_set("crc100k").labels
    rng = np.random.default_rng(seed)
    readme = ["---", "configs:"]
    for config in ("classification", "captioning"):
        readme += [f"- config_name: {config}", "  data_files:"]
        for split, n in zip(("train", "validation", "test"), per_split, strict=True):
            rows = []
            for code, name in zip(CODES, names, strict=True):
                for i in range(n):
                    image = Image.fromarray(texture(code, size, rng))
                    if config == "classification":
                        turns, task, label, source = [("user", "Which tissue?"), ("assistant", name)], config, name, "crc"
                    else:
                        turns = [("user", "Describe the image."),
                                 ("assistant", f"case {split} {code} {i}: {name.lower()} texture")]
                        task, label, source = "captioning", None, "synthetic"
                    rows.append({"id": f"syn/{config}/{split}/{code}/{i}", "source": source, "task": task,
                                 "images": [image], "messages": make_messages(turns), "label": label,
                                 "answer_type": None, "image_sha256": ["0" * 64], "license": "CC0-1.0"})
            folder = root / "data" / config
            folder.mkdir(parents=True, exist_ok=True)
            Dataset.from_list(rows, features=FEATURES).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
            readme += [f"  - split: {split}", f"    path: data/{config}/{split}-*.parquet"]
    (root / "README.md").write_text("\n".join([*readme, "---"]) + "\n")
    return root


@pytest.fixture(scope="module")
def textures(tmp_path_factory) -> Path:
    return write_textures(tmp_path_factory.mktemp("textures"))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> dict[str, Path]:
    from pathinsight_models.clip.tiny import save_tiny_clip

    root = tmp_path_factory.mktemp("tinyclip")
    return {kind: save_tiny_clip(kind, root / kind, seed=0) for kind in ("clip", "siglip")}


def _test_split(data: Path):
    import datasets

    test = datasets.load_dataset(str(data), "classification", split="test")
    return [r[0] for r in test["images"]], list(test["label"])


def zero_shot_bacc(model: Path, data: Path) -> float:
    from sklearn.metrics import balanced_accuracy_score

    from pathinsight_models.clip.zeroshot import get_prompt_set, load_encoder, zero_shot_predict

    images, labels = _test_split(data)
    preds, _ = zero_shot_predict(load_encoder(model), get_prompt_set("crc100k"), images)
    return balanced_accuracy_score(labels, preds)


def _losses(out: Path) -> list[float]:
    return [e["loss"] for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in e]


def _train(model: Path, data: Path, out: Path, **extra):
    from pathinsight_models.clip.train import train_clip

    args = {"model_name_or_path": str(model), "dataset_name": str(data), "output_dir": str(out),
            "class_captions": True, "max_steps": 120, "per_device_train_batch_size": 32, "learning_rate": 1e-3,
            "warmup_steps": 0, "lr_scheduler_type": "constant", "logging_steps": 10, "save_strategy": "no",
            "seed": 0, "disable_tqdm": True, **extra}
    return train_clip(args)


# ----------------------------------------------------------------------------------- tiny models


def test_tiny_models_load_with_auto_classes(tiny_clip):
    from transformers import AutoModel, AutoProcessor

    clip = AutoModel.from_pretrained(tiny_clip["clip"])
    siglip = AutoModel.from_pretrained(tiny_clip["siglip"])
    assert type(clip).__name__ == "CLIPModel" and type(siglip).__name__ == "SiglipModel"
    assert type(AutoProcessor.from_pretrained(tiny_clip["clip"])).__name__ == "CLIPProcessor"
    processor = AutoProcessor.from_pretrained(tiny_clip["siglip"])
    assert type(processor).__name__ == "SiglipProcessor"
    ids = processor.tokenizer("An H&E image of Adipose.").input_ids
    assert ids[0] == processor.tokenizer.bos_token_id and ids[-1] == processor.tokenizer.eos_token_id
    assert clip.config.text_config.eos_token_id == processor.tokenizer.eos_token_id  # CLIP pools at EOS
    # SigLIP paper init: t = exp(logit_scale) = 10, b = -10.
    assert float(siglip.logit_scale.detach().exp()) == pytest.approx(10.0) and float(siglip.logit_bias.detach()) == -10.0


# ----------------------------------------------------------------------------------- prompt sets / data


def test_prompt_sets_registry_and_user_yaml(tmp_path):
    from pathinsight_models.clip.zeroshot import get_prompt_set, list_prompt_sets

    assert {"crc100k", "pcam", "pcam_pathgen"} <= set(list_prompt_sets())
    crc = get_prompt_set("crc100k")
    assert len(crc.classes) == 9 and len(crc.templates) == 22
    assert crc.texts("Adipose")[:2] == ["adipose.", "a photomicrograph showing adipose."]
    assert len(crc.texts("Adipose")) == 5 * 22
    path = tmp_path / "mine.yaml"
    path.write_text("classes:\n  benign: [benign tissue]\n  malignant: [carcinoma, cancer]\n"
                    "templates: ['an H&E image of {c}.']\nsource: bach\n")
    mine = get_prompt_set(path)
    assert mine.name == "mine" and mine.source == "bach" and mine.texts("malignant") == [
        "an H&E image of carcinoma.", "an H&E image of cancer."]
    path.write_text("classes:\n  a: [x]\n  b: [y]\ntemplates: ['no placeholder']\n")
    with pytest.raises(InputError, match="must contain"):
        get_prompt_set(path)
    with pytest.raises(InputError, match="did you mean 'pcam'"):
        get_prompt_set("pcan")


def test_pairs_captions_and_seeded_class_captions(textures):
    from pathinsight_models.clip.data import CAPTION_TEMPLATES, load_pairs
    from pathinsight_models.clip.zeroshot import get_prompt_set

    captions = load_pairs(str(textures), "captioning", "train")
    assert captions.counts() == {"caption": 9 * 24}
    first = captions[0]
    assert first["text"] == "case train ADI 0: adipose texture" and first["image"].size == (32, 32)
    both = load_pairs(str(textures), "captioning", "train", class_captions=True, seed=3)
    again = load_pairs(str(textures), "captioning", "train", class_captions=True, seed=3)
    assert both.counts() == {"caption": 216, "class": 216}
    texts = [r.text for r in both.refs if r.kind == "class"]
    assert texts == [r.text for r in again.refs if r.kind == "class"]
    adipose = {s for s in get_prompt_set("crc100k").classes["Adipose"]}
    ref = next(r for r in both.refs if r.kind == "class" and r.row_id.endswith("/ADI/0"))
    assert any(ref.text == t.format(c=s) for t in CAPTION_TEMPLATES for s in adipose)
    assert len(set(texts)) > 20  # the template pool and synonyms vary
    with pytest.raises(InputError, match="never"):
        load_pairs(str(textures), "captioning", "test", class_captions=True)


# ----------------------------------------------------------------------------------- training


@pytest.mark.slow
def test_clip_training_lowers_loss_and_raises_zero_shot(tiny_clip, textures, tmp_path):
    from transformers import AutoModel, AutoProcessor

    before = zero_shot_bacc(tiny_clip["clip"], textures)
    out = _train(tiny_clip["clip"], textures, tmp_path / "clip")
    losses = _losses(out)
    after = zero_shot_bacc(out, textures)
    assert before < 0.35 and after >= 0.7, (before, after)
    assert np.mean(losses[-3:]) < 0.7 * losses[0]
    for name in ("model.safetensors", "metrics.jsonl", "loss.png", "README.md", "run_info.json", "clip_args.json"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "pipeline_tag: zero-shot-image-classification" in card
    assert type(AutoModel.from_pretrained(out)).__name__ == "CLIPModel"
    assert type(AutoProcessor.from_pretrained(out)).__name__ == "CLIPProcessor"
    assert json.loads((out / "run_info.json").read_text())["pairs"]["train"] == {"caption": 216, "class": 216}


@pytest.mark.slow
def test_siglip_learns_with_the_paper_init(tiny_clip, textures, tmp_path):
    from transformers import AutoModel

    # Start from the default (t=1, b=0) initialisation; `siglip_init` restores the paper's (10, -10).
    base = AutoModel.from_pretrained(tiny_clip["siglip"])
    with torch.no_grad():
        base.logit_scale.zero_()
        base.logit_bias.zero_()
    default_dir = tmp_path / "default_init"
    base.save_pretrained(default_dir)
    from transformers import AutoProcessor

    AutoProcessor.from_pretrained(tiny_clip["siglip"]).save_pretrained(default_dir)
    out = _train(default_dir, textures, tmp_path / "siglip", siglip_init=True)
    losses = _losses(out)
    assert np.mean(losses[-3:]) < 0.7 * losses[0]
    assert zero_shot_bacc(out, textures) >= 0.7


@pytest.mark.slow
def test_lora_locked_image_tower_and_resume(tiny_clip, textures, tmp_path):
    from transformers import AutoModel

    out = _train(tiny_clip["clip"], textures, tmp_path / "lit", method="lora", lock_image_tower=True,
                 max_steps=2, save_strategy="steps", save_steps=2, logging_steps=1, lora_r=4)
    before = AutoModel.from_pretrained(tiny_clip["clip"]).state_dict()
    after = AutoModel.from_pretrained(out).state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("text_model.", "text_projection.")) for k in changed)
    assert (out / "adapter" / "adapter_config.json").is_file()
    _train(tiny_clip["clip"], textures, tmp_path / "lit", method="lora", lock_image_tower=True, max_steps=3,
           save_strategy="steps", save_steps=2, logging_steps=1, lora_r=4, resume=True)
    assert json.loads((out / "run_info.json").read_text())["global_step"] == 3


# ----------------------------------------------------------------------------------- open_clip


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory) -> Path:
    """A random tiny open_clip ViT (custom config) saved in open_clip's hub layout."""
    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    return write_open_clip(tmp_path_factory.mktemp("openclip"), cfg)


def test_converter_is_exact(tiny_open_clip, tmp_path):
    import open_clip
    from transformers import AutoModel, AutoProcessor

    from pathinsight_models.clip.open_clip import convert_open_clip, open_clip_to_transformers

    oc, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tiny_open_clip}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_open_clip}")
    hf = open_clip_to_transformers(oc)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    texts = ["an H&E image of adipose.", "tumor", "a longer sentence about lymphocytes infiltrating the stroma"]
    ids = tokenizer(texts)
    with torch.no_grad():
        assert (oc.encode_image(pixels) - hf.get_image_features(pixel_values=pixels).pooler_output).abs().max() < 1e-6
        text_hf = hf.get_text_features(input_ids=ids, attention_mask=(ids != 0).long()).pooler_output
        assert (oc.encode_text(ids) - text_hf).abs().max() < 1e-6
        assert float(hf.logit_scale) == float(oc.logit_scale)
    out = convert_open_clip(tiny_open_clip, tmp_path / "converted")
    model, processor = AutoModel.from_pretrained(out), AutoProcessor.from_pretrained(out)
    enc = processor.tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt")
    same = enc["input_ids"].where(enc["attention_mask"].bool(), 0)  # HF pads with EOS, open_clip with 0
    assert torch.equal(same, ids)
    with torch.no_grad():
        assert (oc.encode_text(ids) - model.get_text_features(**enc).pooler_output).abs().max() < 1e-5


def test_converter_refuses_non_plain_vit():
    from open_clip.model import CLIP

    from pathinsight_models.clip.open_clip import open_clip_to_transformers

    model = CLIP(embed_dim=16, vision_cfg={"image_size": 16, "layers": 1, "width": 32, "patch_size": 8,
                                           "head_width": 16, "pool_type": "avg"},
                 text_cfg={"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1})
    with pytest.raises(InputError, match="not a plain-ViT"):
        open_clip_to_transformers(model)


def test_zero_shot_equals_clip_benchmark(tiny_open_clip):
    """Same images, class names and templates: our logits and metrics equal clip_benchmark's."""
    from clip_benchmark.metrics import zeroshot_classification as cb
    from sklearn.metrics import balanced_accuracy_score
    from torch.utils.data import DataLoader

    from pathinsight_models.clip.evaluate import classification_scores
    from pathinsight_models.clip.zeroshot import PromptSet, load_encoder, zero_shot_predict

    rng = np.random.default_rng(1)
    names = ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle"]
    images, targets = [], []
    for k, code in enumerate(CODES[:6]):
        for _ in range(5):
            images.append(Image.fromarray(texture(code, 40, rng)))
            targets.append(k)
    templates = ["an H&E image of {c}.", "a histopathology patch showing {c}.", "{c}."]
    encoder = load_encoder(tiny_open_clip)
    prompts = PromptSet(name="t", classes={n: [n] for n in names}, templates=templates)
    preds, logits = zero_shot_predict(encoder, prompts, images, batch_size=10)

    class Folder(torch.utils.data.Dataset):
        classes = names

        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return encoder.preprocess(images[i]), targets[i]

    loader = DataLoader(Folder(), batch_size=10)
    classifier = cb.zero_shot_classifier(encoder.model, encoder.tokenizer, names, templates, "cpu", amp=False)
    ref_logits, target = cb.run_classification(encoder.model, classifier, loader, "cpu", amp=False)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    # clip_benchmark's `evaluate` then scores acc1/acc5 with its `accuracy` (whose float() of a 1-element
    # array fails under numpy 2) and `balanced_accuracy_score(target, argmax)`; the same computation here.
    top = ref_logits.topk(5, 1, True, True)[1].t()
    correct = top.eq(target.view(1, -1).expand_as(top))
    ref = {"acc1": correct[:1].sum().item() / len(target), "acc5": correct[:5].sum().item() / len(target),
           "mean_per_class_recall": balanced_accuracy_score(target, ref_logits.argmax(dim=1))}
    refs = [names[t] for t in targets]
    ours = classification_scores(preds, refs, names, [str(i) for i in range(len(refs))], n_resamples=0,
                                 logits=logits.numpy())
    assert ours["accuracy"] == pytest.approx(ref["acc1"])
    assert ours["top5_accuracy"] == pytest.approx(ref["acc5"])
    assert ours["balanced_accuracy"] == pytest.approx(ref["mean_per_class_recall"])


# ----------------------------------------------------------------------------------- evaluation


def test_retrieval_recall_definition():
    from pathinsight_models.clip.evaluate import retrieval_recalls

    eye = torch.eye(4)
    # text j matches image j except text 3, whose nearest image is 0.
    texts = torch.stack([eye[0], eye[1], eye[2], 0.9 * eye[0] + 0.1 * eye[3]])
    texts = texts / texts.norm(dim=1, keepdim=True)
    r = retrieval_recalls(eye, texts, [0, 1, 2, 3], ks=(1, 2))
    assert r["text_to_image_R@1"] == 0.75 and r["text_to_image_R@2"] == 1.0
    # image 0 retrieves text 0 first (cos 1); image 3's best text is 3 -> all hits at 1
    assert r["image_to_text_R@1"] == 1.0


def test_evaluate_writes_zero_shot_retrieval_and_probe(tiny_clip, textures, tmp_path):
    from sklearn.metrics import f1_score

    from pathinsight_models.clip.evaluate import evaluate_clip

    out = tmp_path / "eval"
    results = evaluate_clip(tiny_clip["clip"], textures, ["crc100k", "retrieval"], out, linear_probe_tasks=True,
                            n_resamples=50, seed=0)
    crc = results["tasks"]["crc100k"]
    zs = crc["zero_shot"]
    assert zs["n"] == 72 and set(zs["ci95"]) == {"accuracy", "balanced_accuracy", "weighted_f1", "macro_f1"}
    lo, hi = zs["ci95"]["accuracy"]
    assert lo <= zs["accuracy"] <= hi
    # weighted F1 agrees with scikit-learn on the run's own predictions (rebuilt from the confusion matrix)
    labels = zs["confusion_labels"][:-1]
    y_true = [labels[i] for i, row in enumerate(zs["confusion_matrix"]) for j, c in enumerate(row) for _ in range(c)]
    y_pred = [zs["confusion_labels"][j] for row in zs["confusion_matrix"] for j, c in enumerate(row) for _ in range(c)]
    assert zs["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted", labels=labels))
    probe = crc["linear_probe"]
    assert probe["C"] in [s["C"] for s in probe["search"]] and probe["n_train"] == 216
    assert probe["balanced_accuracy"] > 0.5  # textures are separable even with random frozen features
    assert set(results["tasks"]["retrieval"]) >= {"image_to_text_R@1", "text_to_image_R@10"}
    for name in ("results.json", "crc100k_per_class.csv", "crc100k_confusion.png"):
        assert (out / name).is_file()


# ----------------------------------------------------------------------------------- assembly


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    from pathinsight_models.clip.tiny import save_tiny_lm

    return save_tiny_lm(tmp_path_factory.mktemp("lm") / "lm")


@pytest.mark.parametrize("kind,extra", [("clip", 1), ("siglip", 0)])
def test_assembled_vlm_reloads_with_identical_vision_weights(tiny_clip, tiny_lm, tmp_path, kind, extra):
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

    from pathinsight_models.clip.assemble import assemble_llava, vision_tower

    out = assemble_llava(tiny_clip[kind], tiny_lm, tmp_path / "vlm")
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    source = AutoModel.from_pretrained(tiny_clip[kind]).vision_model.state_dict()
    target = vision_tower(model).state_dict()
    assert source.keys() == target.keys() and all(torch.equal(source[k], target[k]) for k in source)
    assert type(model).__name__ == "LlavaForConditionalGeneration" and model.config.vision_feature_layer == -2
    assert processor.num_additional_image_tokens == extra
    assert "{% generation %}" in processor.chat_template
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What tissue?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt", images=[Image.new("RGB", (48, 48))])
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16  # (32/8)^2 patches
    with torch.no_grad():
        model(**inputs)  # token count and image features line up
    lineage = json.loads((out / "assembly.json").read_text())
    assert lineage["vision"] == str(tiny_clip[kind]) and lineage["language"] == str(tiny_lm)


def test_assemble_at_a_new_image_size_interpolates_only_the_positions(tiny_clip, tiny_lm, tmp_path):
    from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

    from pathinsight_models.clip.assemble import assemble_llava, vision_tower

    out = assemble_llava(tiny_clip["clip"], tiny_lm, tmp_path / "vlm", image_size=48)
    model, processor = AutoModelForImageTextToText.from_pretrained(out), AutoProcessor.from_pretrained(out)
    source = AutoModel.from_pretrained(tiny_clip["clip"]).vision_model.state_dict()
    target = vision_tower(model).state_dict()
    key = "embeddings.position_embedding.weight"
    assert target[key].shape == (1 + 36, source[key].shape[1]) and torch.equal(target[key][0], source[key][0])
    assert all(torch.equal(source[k], target[k]) for k in source if k != key and "position_ids" not in k)
    inputs = processor(images=[Image.new("RGB", (60, 50))], text=["<image> What tissue?"], return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (48, 48)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 36
    with torch.no_grad():
        model(**inputs)


def test_assemble_on_an_open_clip_tower_copies_the_converted_weights(tiny_open_clip, tiny_lm, tmp_path):
    import open_clip
    from transformers import AutoModelForImageTextToText

    from pathinsight_models.clip.assemble import assemble_llava, vision_tower
    from pathinsight_models.clip.open_clip import open_clip_to_transformers

    out = assemble_llava(tiny_open_clip, tiny_lm, tmp_path / "vlm")
    oc, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tiny_open_clip}")
    expected = open_clip_to_transformers(oc).vision_model.state_dict()
    got = vision_tower(AutoModelForImageTextToText.from_pretrained(out)).state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


@pytest.mark.slow
def test_assembled_vlm_trains_a_stage1_step(tiny_clip, tiny_lm, textures, tmp_path):
    from transformers import AutoModelForImageTextToText

    from pathinsight_models.clip.assemble import assemble_llava
    from pathinsight_models.training import train

    vlm = assemble_llava(tiny_clip["clip"], tiny_lm, tmp_path / "vlm")
    out = train({"model_name_or_path": str(vlm), "dataset_name": str(textures), "dataset_config": "captioning",
                 "output_dir": str(tmp_path / "stage1"), "method": "full", "stage": "align", "max_steps": 2,
                 "per_device_train_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1,
                 "save_strategy": "no", "max_length": 160, "seed": 0})
    before = dict(AutoModelForImageTextToText.from_pretrained(vlm).named_parameters())
    after = dict(AutoModelForImageTextToText.from_pretrained(out).named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith("model.multi_modal_projector.") for n in changed)
    assert np.isfinite(_losses(out)).all()


# ----------------------------------------------------------------------------------- CLI


def test_cli_tiny_eval_and_assemble(textures, tiny_lm, tmp_path, capsys):
    from pathinsight_models.cli import main

    assert main(["clip", "tiny", "--kind", "siglip", "--output", str(tmp_path / "s"), "--hidden-size", "32",
                 "--projection-dim", "32"]) == 0
    assert main(["clip", "eval", "--model", str(tmp_path / "s"), "--data", str(textures), "--tasks",
                 "crc100k,retrieval", "--output", str(tmp_path / "r"), "--bootstrap", "20"]) == 0
    printed = capsys.readouterr().out
    assert "crc100k" in printed and "image_to_text_R@1" in printed
    assert json.loads((tmp_path / "r" / "results.json").read_text())["tasks"]["crc100k"]["zero_shot"]["n"] == 72
    assert main(["models", "assemble", "--vision", str(tmp_path / "s"), "--language", str(tiny_lm),
                 "--output", str(tmp_path / "vlm"), "--image_size", "48"]) == 0
    lineage = json.loads((tmp_path / "vlm" / "assembly.json").read_text())
    assert lineage["image_size"] == 48 and lineage["image_seq_length"] == 36 and lineage["num_additional_image_tokens"] == 0
    assert main(["clip", "eval", "--model", str(tmp_path / "s"), "--data", str(textures), "--tasks", "nope",
                 "--output", str(tmp_path / "x")]) == 2


@pytest.mark.slow
def test_cli_train_passes_training_arguments(tiny_clip, textures, tmp_path):
    from pathinsight_models.cli import main

    out = tmp_path / "o"
    config = tmp_path / "clip.yaml"
    config.write_text(f"model_name_or_path: {tiny_clip['clip']}\ndataset_name: {textures}\nmax_steps: 5\n"
                      "per_device_train_batch_size: 8\nsave_strategy: 'no'\n")
    assert main(["clip", "train", "--config", str(config), "--output_dir", str(out), "--max_steps", "2",
                 "--lock_text_tower", "true", "--logging_steps", "1"]) == 0
    args = json.loads((out / "clip_args.json").read_text())
    assert args["lock_text_tower"] is True and json.loads((out / "run_info.json").read_text())["global_step"] == 2
    assert main(["clip", "train", "--model_name_or_path", "x", "--dataset_name", "y", "--no_such_option", "1"]) == 2


@pytest.mark.slow
def test_clip_demo_runs_offline(tmp_path):
    from pathinsight_models.clip.demo import run_clip_demo

    summary = run_clip_demo(tmp_path / "demo", steps=100, stage1_steps=2)
    assert summary["crc_balanced_accuracy_after"] >= summary["crc_balanced_accuracy_before"] + 0.3
    assert isinstance(summary["answer"], str)
    assert json.loads((tmp_path / "demo" / "clip_demo.json").read_text())["steps"] == 100
