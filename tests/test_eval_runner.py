"""Runner, generation and training callback on tiny random models of the real architectures."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pathenhanceds.labels import CRC_CLASSES, PCAM_NO, PCAM_YES
from pathenhanceds.schema import FEATURES, make_messages
from pathenhanceds.selection.prompts import CRC_QUERY, PCAM_CANCER_QUESTIONS
from pathinsight_models.cli import main
from pathinsight_models.tiny import save_tiny_model, spread_weights

FAMILIES = ("llava", "qwen2_5_vl", "idefics3")
DIGEST = "0123456789abcdef" * 4


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on 2 shared cores: one intra-op thread avoids oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {fam: save_tiny_model(fam, root / fam, seed=0) for fam in FAMILIES}


def _png(seed: int, size: int = 40) -> tuple[bytes, str]:
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue(), hashlib.sha256(buf.getvalue()).hexdigest()


def _row(id_, source, task, turns, label=None, answer_type=None, seed=0):
    data, sha = _png(seed)
    return {"id": id_, "source": source, "task": task, "images": [{"bytes": data, "path": None}],
            "messages": make_messages(turns), "label": label, "answer_type": answer_type,
            "image_sha256": [sha], "license": "test"}


def _rows() -> dict[str, list[dict]]:
    names = list(CRC_CLASSES.values())
    rows: dict[str, list[dict]] = {"classification": [], "captioning": [], "vqa": [], "conversation": []}
    for i in range(12):
        rows["classification"].append(_row(f"crc/{i}", "crc", "classification",
                                           [("user", CRC_QUERY), ("assistant", names[i % 9])], names[i % 9], "closed", i))
    for i in range(6):
        label = "yes" if i % 2 == 0 else "no"
        rows["classification"].append(_row(f"pcam/{i}", "pcam", "classification",
                                           [("user", PCAM_CANCER_QUESTIONS[i]), ("assistant", PCAM_YES if label == "yes" else PCAM_NO)],
                                           label, "closed", 100 + i))
    for img, grade in enumerate(["normal", "low grade", "high grade"]):
        for k in range(1 if grade == "normal" else 2):
            caption = f"Nuclear pleomorphism is mild. Polarity is lost. Mitosis is rare. {grade.capitalize()}."
            rows["captioning"].append(_row(f"pathologist_level/{img}/{k}", "pathologist_level", "captioning",
                                           [("user", "Describe this pathology image."), ("assistant", caption)],
                                           grade, None, 200 + img))
    for img in range(2):
        for j, (q, a) in enumerate([("Is this malignant?", "yes"), ("Is there necrosis?", "no"), ("What organ is shown?", "lung")]):
            rows["vqa"].append(_row(f"pathvqa/{img}_{j}", "pathvqa", "vqa", [("user", q), ("assistant", a)],
                                    a if a in ("yes", "no") else None, "closed" if a in ("yes", "no") else "open", 300 + img))
    rows["conversation"].append(_row("llava_med/0", "llava_med", "conversation",
                                     [("user", "What is shown?"), ("assistant", "A section of colon."),
                                      ("user", "Any tumor?"), ("assistant", "Yes, an adenocarcinoma.")], seed=400))
    return rows


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    """A directory in the PathEnhanceDS build layout (parquet per config, README configs, manifest)."""
    from datasets import Dataset

    out = tmp_path_factory.mktemp("build")
    rows = _rows()
    configs = []
    for cfg, rs in {**rows, "all": [r for group in rows.values() for r in group]}.items():
        folder = out / "data" / cfg
        folder.mkdir(parents=True)
        Dataset.from_list(rs, features=FEATURES).to_parquet(str(folder / "test-00000-of-00001.parquet"))
        configs.append(f"- config_name: {cfg}\n  data_files:\n  - split: test\n    path: data/{cfg}/test-*")
    (out / "README.md").write_text("---\nconfigs:\n" + "\n".join(configs) + "\n---\n")
    (out / "manifest.json").write_text(json.dumps({"digest": DIGEST}))
    return out


def _items(n: int = 9):
    rng = np.random.default_rng(0)
    questions = ["Describe the histopathology image.", "What type of tissue is shown?",
                 "Is this tissue malignant? Answer with yes or no.", "Which class best describes this patch?"]
    items = []
    for i in range(n):
        size = int(rng.integers(24, 72))  # different sizes: different image token counts for Qwen
        image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        text = questions[i % 4] + " please" * (i % 3)  # different lengths: left padding inside batches
        items.append({"id": str(i), "messages": make_messages([("user", text)]), "image": image})
    return items


def _spread(model):
    """Weights re-drawn with std 0.1 (seed 0): otherwise batched == per-item would hold trivially."""
    return spread_weights(model, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_batched_generation_equals_per_item_loop(tiny, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pathinsight_models.evaluation.generation import generate

    model = _spread(AutoModelForImageTextToText.from_pretrained(tiny[family]).eval())
    processor = AutoProcessor.from_pretrained(tiny[family])
    items = _items()
    one = generate(model, processor, items, max_new_tokens=10, batch_size=1, progress=False)
    many = generate(model, processor, items, max_new_tokens=10, batch_size=4, progress=False)
    assert one == many
    assert len(set(one)) == len(items)  # input-dependent answers, so the equality above means something


def test_eval_run_writes_results_predictions_report(tiny, build_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["eval", "--model", str(tiny["llava"]), "--data", str(build_dir), "--tasks",
                 "crc,pcam,captioning,pathvqa,conversation", "--output", str(out), "--batch-size", "4",
                 "--bootstrap", "200", "--max-new-tokens", "12", "--no-progress"])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["digest"] == DIGEST and res["model"]["digest"] and res["versions"]["transformers"]
    expected_n = {"crc": 12, "pcam": 6, "captioning": 5, "pathvqa": 6, "conversation": 2}
    for task, n in expected_n.items():
        r = res["tasks"][task]
        assert r["n"] == n, task
        assert r["data"]["digest"] == DIGEST
        assert r["decoding"]["strategy"] == "greedy" and r["decoding"]["max_new_tokens"] == 12
        assert r["prompts"]["distinct"] >= 1 and r["bootstrap"]["seed"] == 0
        assert isinstance(r["parse_failures"], int)
        lines = [json.loads(x) for x in (out / "predictions" / f"{task}.jsonl").read_text().splitlines()]
        assert len(lines) == n
        assert {"id", "prompt", "prediction", "reference", "parsed", "correct"} <= set(lines[0])
        unparsed = sum(1 for x in lines if x["parsed"] is None and x["correct"] is not None)
        if task in ("crc", "pcam"):
            assert unparsed == r["parse_failures"]
            assert all(x["correct"] is False for x in lines if x["parsed"] is None)
    assert res["tasks"]["crc"]["prompts"]["most_common"][0]["text"] == CRC_QUERY
    assert set(res["tasks"]["pathvqa"]["metrics"]) == {"llava-med", "quilt", "normalized", "exact", "llava-med-pre35"}
    assert (out / "confusion_crc.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "## crc" in report and "unparsed answers" in report and DIGEST in report
    # the same predictions re-scored by `eval score` give the same numbers (same parsers and metrics)
    assert main(["eval", "score", "--task", "crc", "--predictions", str(out / "predictions" / "crc.jsonl"),
                 "--output", str(tmp_path / "rescored"), "--bootstrap", "200"]) == 0
    again = json.loads((tmp_path / "rescored" / "results.json").read_text())["tasks"]["crc"]
    assert again["metrics"] == res["tasks"]["crc"]["metrics"]
    assert again["parse_failures"] == res["tasks"]["crc"]["parse_failures"]


def test_runner_batch_size_does_not_change_predictions(tiny, build_dir, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pathinsight_models.evaluation.runner import run_evaluation

    model_dir = tmp_path / "qwen_spread"
    _spread(AutoModelForImageTextToText.from_pretrained(tiny["qwen2_5_vl"])).save_pretrained(model_dir)
    AutoProcessor.from_pretrained(tiny["qwen2_5_vl"]).save_pretrained(model_dir)
    runs = {}
    for bs in (1, 5):
        run_evaluation(str(model_dir), str(build_dir), ["pathvqa", "captioning"], output=tmp_path / str(bs),
                       batch_size=bs, n_resamples=0, max_new_tokens=8, progress=False)
        runs[bs] = [[json.loads(x)["prediction"] for x in (tmp_path / str(bs) / "predictions" / f"{t}.jsonl").read_text().splitlines()]
                    for t in ("pathvqa", "captioning")]
    assert runs[1] == runs[5]
    assert len(set(runs[1][0])) > 3  # input-dependent answers


def test_runner_limit_and_adapter(tiny, build_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from pathinsight_models.evaluation.runner import run_evaluation

    base = AutoModelForImageTextToText.from_pretrained(tiny["llava"])
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    res = run_evaluation(str(tiny["llava"]), str(build_dir), ["crc"], output=tmp_path / "a", adapter=str(tmp_path / "adapter"),
                         limit=5, seed=3, n_resamples=50, max_new_tokens=6, progress=False)
    r = res["tasks"]["crc"]
    assert r["n"] == 5 and res["model"]["adapter"] == str(tmp_path / "adapter") and res["model"]["adapter_digest"]
    base_res = run_evaluation(str(tiny["llava"]), str(build_dir), ["crc"], output=tmp_path / "b", limit=5, seed=3,
                              n_resamples=50, max_new_tokens=6, progress=False)
    ids = [json.loads(x)["id"] for x in (tmp_path / "b" / "predictions" / "crc.jsonl").read_text().splitlines()]
    assert ids == [json.loads(x)["id"] for x in (tmp_path / "a" / "predictions" / "crc.jsonl").read_text().splitlines()]
    preds = [(tmp_path / d / "predictions" / "crc.jsonl").read_text() for d in ("a", "b")]
    assert preds[0] != preds[1]  # the (random, non-zero) adapter changes the model
    assert base_res["tasks"]["crc"]["n"] == 5


def test_runner_pathmmu_never_guesses(tiny, tmp_path):
    from pathinsight_models.evaluation.runner import run_evaluation

    root = tmp_path / "PathMMU"
    (root / "images").mkdir(parents=True)
    items = []
    for i in range(4):
        Image.fromarray(np.full((30, 30, 3), 40 * i, dtype=np.uint8)).save(root / "images" / f"{i}.png")
        items.append({"No": i, "img": f"images/{i}.png", "question": "Which tissue is this?",
                      "options": ["A) lung", "B) liver", "C) kidney"], "answer": "ABC"[i % 3]})
    (root / "data.json").write_text(json.dumps({"PubMed": {"test": items[:3]}, "Atlas": {"test": items[3:]}}))
    res = run_evaluation(str(tiny["idefics3"]), None, ["pathmmu"], output=tmp_path / "out", pathmmu=root,
                         n_resamples=50, max_new_tokens=6, progress=False)
    r = res["tasks"]["pathmmu"]
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions" / "pathmmu.jsonl").read_text().splitlines()]
    assert r["n"] == 4 and r["parse_failures"] == sum(x["parsed"] is None for x in lines)
    assert all(x["correct"] is False for x in lines if x["parsed"] is None)
    assert r["metrics"]["strict"]["accuracy"]["value"] == pytest.approx(np.mean([x["correct"] for x in lines]))
    assert "accuracy_PubMed" in r["metrics"]["strict"] and r["data"]["data_json_sha256"]


def test_runner_runs_the_registry_default_tasks(tiny, build_dir, tmp_path):
    """Without `tasks`, the runner runs `default_tasks()`: the list `eval --help` and the leaderboard show."""
    from pathinsight_models.evaluation.runner import run_evaluation
    from pathinsight_models.evaluation.tasks import default_tasks

    res = run_evaluation(str(tiny["llava"]), str(build_dir), output=tmp_path / "d", limit=2, n_resamples=0,
                         max_new_tokens=2, progress=False)
    assert list(res["tasks"]) == default_tasks() == ["crc", "pcam", "captioning", "pathvqa"]
    assert res["model"]["id"] == str(tiny["llava"]) and res["model"]["processor_from"] == str(tiny["llava"])


def test_runner_input_errors(tiny, build_dir, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny["llava"]), "--tasks", "crc", "--output", str(tmp_path / "x")]) == 2
    assert "needs PathEnhanceDS data" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny["llava"]), "--data", str(build_dir), "--tasks", "nope",
                 "--output", str(tmp_path / "x")]) == 2
    assert main(["eval", "--model", str(tiny["llava"]), "--data", str(build_dir), "--tasks", "crc",
                 "--split", "train", "--output", str(tmp_path / "x")]) == 2
    assert "cannot load config" in capsys.readouterr().err


def test_callback_logs_task_metrics_next_to_loss(tiny, build_dir, tmp_path):
    from datasets import load_dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

    from pathinsight_models.evaluation.callback import TaskMetricsCallback
    from pathinsight_models.evaluation.generation import _chat_messages

    model = AutoModelForImageTextToText.from_pretrained(tiny["llava"])
    processor = AutoProcessor.from_pretrained(tiny["llava"])
    rows = load_dataset(str(build_dir), "all", split="test")
    train_rows = [rows[i] for i in range(6)]

    def collate(batch):
        texts = [processor.apply_chat_template(_chat_messages(r["messages"]), tokenize=False) for r in batch]
        enc = processor(text=texts, images=[[r["images"][0].convert("RGB")] for r in batch], padding=True,
                        return_tensors="pt")
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        enc["labels"] = labels
        return enc

    padding_side = processor.tokenizer.padding_side
    callback = TaskMetricsCallback(["crc", "pathvqa"], rows, processor, every_n_steps=2, limit=4,
                                   batch_size=4, max_new_tokens=6)
    args = TrainingArguments(output_dir=str(tmp_path / "train"), max_steps=4, per_device_train_batch_size=2,
                             logging_steps=1, learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train_rows, data_collator=collate, callbacks=[callback])
    trainer.train()
    logged = {e["step"]: e for e in trainer.state.log_history if "loss" in e}
    assert set(logged) == {1, 2, 3, 4}
    for step in (2, 4):
        assert "task_crc/f1" in logged[step] and "task_crc/unparsed" in logged[step]
        assert "task_pathvqa/llava-med/closed_accuracy" in logged[step]
        assert 0.0 <= logged[step]["task_crc/f1"] <= 1.0
    assert "task_crc/f1" not in logged[1] and "task_crc/f1" not in logged[3]
    assert [h["step"] for h in callback.history] == [2, 4]
    assert len(callback.items()["crc"]) == 4 and model.training  # train mode restored after generation
    assert processor.tokenizer.padding_side == padding_side  # left padding was for generation only
