"""`pathinsight data import` (imagefolder, llava, sharegpt, csv) and the generic evaluation tasks on imported data."""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathenhanceds.importing import (
    CLASSIFICATION_QUESTIONS,
    ImportRecord,
    allocate,
    assign_splits,
    import_dataset,
    list_import_formats,
)
from pathinsight_models.cli import main

CLASSES = ("adipose", "stroma", "tumor")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _image(path: Path, seed: int, fmt: str = "PNG") -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def _imagefolder(root: Path, per_class: int = 10, classes=CLASSES, seed: int = 0) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            fmt, ext = ("JPEG", "jpg") if i % 3 == 0 else ("PNG", "png")
            _image(root / name / f"{name}_{i:02d}.{ext}", seed=seed + 100 * c + i, fmt=fmt)
    return root


def _load(out: Path, config: str):
    from datasets import load_dataset

    return load_dataset(str(out), config)


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["data", "import", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ------------------------------------------------------------------------------------- imagefolder
def test_imagefolder_round_trip_bytes_labels_stratified_seeded(tmp_path, capsys):
    src = _imagefolder(tmp_path / "patches")
    _image(src / "tumor" / "tumor_bmp.bmp", seed=999, fmt="BMP")  # not JPEG/PNG: stored as lossless PNG
    code, text = _run(capsys, "--format", "imagefolder", "--input", str(src), "--output", str(tmp_path / "out"),
                      "--license", "cc-by-4.0", "--seed", "3")
    assert code == 0, text
    ds = _load(tmp_path / "out", "classification")
    assert {s: ds[s].num_rows for s in ds} == {"train": 25, "validation": 3, "test": 3}
    for split in ds:
        by_class = Counter(ds[split]["label"])
        assert set(by_class) == set(CLASSES)  # stratified: every class in every split
    pools = {q.replace("{options}", ", ".join(f"'{c}'" for c in CLASSES)) for q in CLASSIFICATION_QUESTIONS}
    seen_questions: dict[str, set[str]] = {}
    for row in ds["train"]:
        rel = row["id"].removeprefix("imported/")
        assert row["source"] == "imported" and row["task"] == "classification" and row["license"] == "cc-by-4.0"
        assert row["label"] == rel.split("/")[0]
        question = row["messages"][0]["content"][1]["text"]
        assert question in pools and row["messages"][1]["content"][0]["text"] == row["label"]
        seen_questions.setdefault(row["label"], set()).add(question)
    # bytes: JPEG/PNG kept as they are, BMP converted to PNG with the same pixels
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out" / "data" / "classification").to_pylist()
    for row in table:
        rel = row["id"].removeprefix("imported/")
        data = row["images"][0]["bytes"]
        original = next((src / rel).parent.glob(Path(rel).name + ".*"))
        if original.suffix == ".bmp":
            assert data.startswith(b"\x89PNG")
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(Image.open(original)))
        else:
            assert data == original.read_bytes()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["labels"] == list(CLASSES) and manifest["license"] == "cc-by-4.0"
    assert manifest["splits"]["from_input"] is False and manifest["skipped"] == []
    card = (tmp_path / "out" / "README.md").read_text()
    assert "config_name: classification" in card and "dataset_info:" in card and "license: cc-by-4.0" in card
    # same input + seed -> same digest; another seed -> another split
    again = import_dataset(src, tmp_path / "again", format="imagefolder", seed=3, license="cc-by-4.0")
    assert again.digest == manifest["digest"]
    other = import_dataset(src, tmp_path / "other", format="imagefolder", seed=4, license="cc-by-4.0")
    assert other.digest != manifest["digest"]
    # --overwrite replaces an earlier import only
    code, text = _run(capsys, "--format", "imagefolder", "--input", str(src), "--output", str(tmp_path / "out"))
    assert code == 2 and "--overwrite" in text


def test_split_assignment_is_order_independent_and_allocates_every_split():
    assert allocate(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert allocate(3, (0.8, 0.1, 0.1)) == [1, 1, 1]  # a small class still reaches every split
    assert allocate(2, (0.8, 0.1, 0.1)) == [2, 0, 0]
    recs = [ImportRecord(f"r{i}", Path(f"{i}.png"), "f", label=CLASSES[i % 3], sha256=f"{i:064x}") for i in range(60)]
    assign_splits(recs, (0.7, 0.15, 0.15), seed=1, stratify=True)
    first = {r.record_id: r.split for r in recs}
    shuffled = [ImportRecord(r.record_id, r.image, "f", label=r.label, sha256=r.sha256) for r in recs]
    random.Random(5).shuffle(shuffled)
    assign_splits(shuffled, (0.7, 0.15, 0.15), seed=1, stratify=True)
    assert {r.record_id: r.split for r in shuffled} == first
    assert Counter((r.label, r.split) for r in recs)[("tumor", "test")] == 3


def test_imagefolder_split_folders_are_respected(tmp_path, capsys):
    root = tmp_path / "in"
    _imagefolder(root / "train", per_class=4, classes=("a", "b"))
    _imagefolder(root / "val", per_class=2, classes=("a", "b"), seed=1000)
    _imagefolder(root / "test", per_class=1, classes=("a", "b"), seed=2000)
    code, text = _run(capsys, "--format", "imagefolder", "--input", str(root), "--output", str(tmp_path / "out"),
                      "--question", "What is this? {options}", "--question", "Name the class.")
    assert code == 0, text
    ds = _load(tmp_path / "out", "classification")
    assert {s: ds[s].num_rows for s in ds} == {"train": 8, "validation": 4, "test": 2}
    assert all(i.startswith("imported/test/") for i in ds["test"]["id"])
    questions = {row["messages"][0]["content"][1]["text"] for row in ds["train"]}
    assert questions <= {"What is this? 'a', 'b'", "Name the class."}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["splits"]["from_input"] is True


# ------------------------------------------------------------------------------------- JSON and CSV
def test_llava_round_trip_conversation(tmp_path):
    root = tmp_path / "llava"
    records = []
    for i in range(6):
        _image(root / "images" / f"{i}.png", seed=i)
        records.append({"id": f"case{i}", "image": f"images/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat do you see?"}, {"from": "gpt", "value": f"Finding {i}."},
            {"from": "human", "value": "Anything else?"}, {"from": "gpt", "value": "No."}]})
    (root / "data.json").write_text(json.dumps(records))
    res = import_dataset(root / "data.json", tmp_path / "out", format="llava", splits="0.5,0.5,0")
    assert res.counts == {"conversation": {"train": {"imported": 3}, "validation": {"imported": 3}}}
    ds = _load(tmp_path / "out", "conversation")
    row = ds["train"][0]
    k = int(row["id"].removeprefix("imported/case"))
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert row["messages"][0]["content"][0]["type"] == "image"
    assert row["messages"][0]["content"][1]["text"] == "What do you see?"
    assert row["messages"][1]["content"][0]["text"] == f"Finding {k}."
    assert "test" not in ds


def test_sharegpt_export_of_an_import_imports_back(tmp_path):
    from pathenhanceds.formats import export_dataset

    first = import_dataset(_imagefolder(tmp_path / "in", per_class=5), tmp_path / "ds", format="imagefolder")
    export = export_dataset(tmp_path / "ds", "sharegpt", tmp_path / "sg", config="classification", split="train")
    res = import_dataset(export.output, tmp_path / "back", format="sharegpt", task="classification",
                         splits="0.6,0.2,0.2", name="roundtrip")
    assert res.manifest["labels"] == list(CLASSES)
    train = _load(tmp_path / "ds", "classification")["train"]
    back = _load(tmp_path / "back", "classification")
    texts = {r["messages"][0]["content"][1]["text"] for s in back for r in back[s]}
    assert texts <= {r["messages"][0]["content"][1]["text"] for r in train}  # the input's own questions kept
    assert sum(back[s].num_rows for s in back) == first.counts["classification"]["train"]["imported"]


def test_csv_captioning_and_vqa(tmp_path):
    root = tmp_path / "csv"
    with open(root.mkdir() or root / "captions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption", "split"])
        for i in range(4):
            _image(root / "img" / f"{i}.png", seed=i)
            w.writerow([f"img/{i}.png", f"Caption number {i}, with a comma.", "train" if i < 3 else "test"])
    res = import_dataset(root / "captions.csv", tmp_path / "cap", format="csv")
    assert res.counts == {"captioning": {"train": {"imported": 3}, "test": {"imported": 1}}}
    row = _load(tmp_path / "cap", "captioning")["test"][0]
    assert row["messages"][1]["content"][0]["text"] == "Caption number 3, with a comma." and row["label"] is None
    with open(root / "vqa.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "question", "answer"])
        for i in range(4):
            w.writerow([f"img/{i}.png", f"Is lesion {i} malignant?", "yes" if i % 2 else "it is benign"])
    import_dataset(root / "vqa.csv", tmp_path / "vqa", format="csv", splits=(0.5, 0, 0.5))
    ds = _load(tmp_path / "vqa", "vqa")
    rows = [r for s in ds for r in ds[s]]
    assert sorted(r["answer_type"] for r in rows) == ["closed", "closed", "open", "open"]


# ------------------------------------------------------------------------------------------ bad input
def _bad_llava(root: Path, image: str, duplicate: bool = False) -> Path:
    _image(root / "images" / "ok.png", seed=1)
    _image(root / "images" / "ok2.png", seed=2)
    conv = [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]
    records = [{"id": "a", "image": "images/ok.png", "conversations": conv},
               {"id": "a" if duplicate else "b", "image": image, "conversations": conv},
               {"id": "c", "image": "images/ok2.png", "conversations": conv}]
    (root / "data.json").write_text(json.dumps(records))
    return root / "data.json"


@pytest.mark.parametrize("case", ["empty_class", "one_class", "unreadable", "outside", "duplicate"])
def test_bad_input_exit_2_then_skip_reports(tmp_path, capsys, case):
    outside = tmp_path / "secret.png"
    _image(outside, seed=7)
    if case in ("empty_class", "one_class", "unreadable"):
        src = _imagefolder(tmp_path / "in", per_class=3, classes=("a",) if case == "one_class" else ("a", "b"))
        if case == "empty_class":
            (src / "empty").mkdir()
        if case == "unreadable":
            (src / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        fmt = "imagefolder"
    else:
        src = _bad_llava(tmp_path / "in", "../secret.png" if case == "outside" else "images/ok2.png",
                         duplicate=case == "duplicate")
        fmt = "llava"
    code, text = _run(capsys, "--format", fmt, "--input", str(src), "--output", str(tmp_path / "out"))
    assert code == 2, text
    assert "file:" in text and "fix:" in text and not (tmp_path / "out").exists()
    expected = {"empty_class": "holds no images", "one_class": "at least two classes", "unreadable": "image",
                "outside": "outside the input folder", "duplicate": "duplicate id"}[case]
    assert expected in text
    if case != "one_class":
        assert "record:" in text
    code, text = _run(capsys, "--format", fmt, "--input", str(src), "--output", str(tmp_path / "out"),
                      "--on-error", "skip")
    if case == "one_class":  # not a record problem: never skippable
        assert code == 2
        return
    assert code == 0, text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["skipped"]) == 1 and expected.split()[0] in manifest["skipped"][0]["reason"]
    assert not Path(manifest["skipped"][0]["file"]).is_absolute()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "1 record(s) were skipped" in card


def test_import_formats_and_option_errors(tmp_path, capsys):
    assert list_import_formats() == ["csv", "imagefolder", "llava", "sharegpt"]
    src = _imagefolder(tmp_path / "in", per_class=2, classes=("a", "b"))
    code, text = _run(capsys, "--format", "imagefolder", "--input", str(src), "--output", str(tmp_path / "o"),
                      "--splits", "0.5,0.6,0.1")
    assert code == 2 and "summing to 1" in text
    code, text = _run(capsys, "--format", "imagefolder", "--input", str(src), "--output", str(src / "a" / "o"))
    assert code == 2 and "input" in text  # never inside the input


# ------------------------------------------------------------------------------- generic evaluation
def test_parse_label_rule():
    from pathinsight_models.evaluation.parsers import parse_label

    labels = ["Normal", "Low grade", "High grade", "low"]
    assert parse_label("Normal", labels).value == "Normal"
    assert parse_label("  HIGH-grade. ", labels).value == "High grade"
    assert parse_label("I think this is low grade carcinoma", labels).value == "Low grade"  # longest name wins
    assert parse_label("not normal, high grade", labels).value == "High grade"  # negated mention dropped
    assert parse_label("normal or high grade", labels).reason.startswith("ambiguous")
    assert parse_label("no idea", labels).reason == "no class named"
    assert parse_label("", labels).reason == "empty answer"


def test_generic_classification_scores_predictions_on_imported_labels(tmp_path, capsys):
    from pathinsight_models.evaluation.runner import build_items
    from pathinsight_models.evaluation.tasks import get_task

    import_dataset(_imagefolder(tmp_path / "in", per_class=10), tmp_path / "ds", format="imagefolder")
    items, info = build_items(get_task("classification"), data=str(tmp_path / "ds"), split="test")
    assert info["labels"] == list(CLASSES) and info["labels_from"] == "dataset label column"
    assert sorted(it["label"] for it in items) == sorted(CLASSES)  # one per class in test
    answers = {"adipose": "Adipose.", "stroma": "tumor", "tumor": "Maybe tumor or stroma"}
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": it["id"], "prediction": answers[it["label"]], "label": it["label"]})
                             + "\n" for it in items))
    assert main(["eval", "score", "--task", "classification", "--predictions", str(preds), "--labels",
                 ",".join(CLASSES), "--output", str(tmp_path / "scored"), "--bootstrap", "20"]) == 0
    res = json.loads((tmp_path / "scored" / "results.json").read_text())["tasks"]["classification"]
    m = {k: v["value"] for k, v in res["metrics"]["macro"].items()}
    # adipose right; stroma called tumor; tumor answer names two classes -> unparsed (wrong, never guessed)
    assert m["accuracy"] == pytest.approx(1 / 3) and m["balanced_accuracy"] == pytest.approx(1 / 3)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(1 / 3)
    assert res["parse_failures"] == 1 and res["extras"]["per_class"]["stroma"]["recall"] == 0
    assert res["extras"]["confusion_labels"] == [*CLASSES, "unparsed"]
    assert (tmp_path / "scored" / "confusion_classification.png").is_file()
    # --labels for a task that has no label set is refused
    assert main(["eval", "score", "--task", "crc", "--predictions", str(preds), "--labels", "a,b",
                 "--output", str(tmp_path / "x")]) == 2
    capsys.readouterr()


def test_captioning_vqa_conversation_tasks_read_imported_rows(tmp_path):
    from pathinsight_models.evaluation.runner import build_items
    from pathinsight_models.evaluation.scoring import score_items
    from pathinsight_models.evaluation.tasks import get_task

    root = tmp_path / "in"
    conv = []
    with open(root.mkdir() or root / "d.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption", "question", "answer", "split"])
        for i in range(3):
            _image(root / f"{i}.png", seed=i)
            w.writerow([f"{i}.png", f"A caption {i}.", f"Is it {i}?", "yes", "test"])
            conv.append({"id": str(i), "image": f"{i}.png", "conversations": [
                {"from": "human", "value": "<image>\nHi?"}, {"from": "gpt", "value": f"Answer {i}."},
                {"from": "human", "value": "More?"}, {"from": "gpt", "value": "Done."}], "split": "test"})
    (root / "c.json").write_text(json.dumps(conv))
    import_dataset(root / "d.csv", tmp_path / "cap", format="csv", task="captioning")
    import_dataset(root / "d.csv", tmp_path / "vqa", format="csv", task="vqa")
    import_dataset(root / "c.json", tmp_path / "conv", format="llava")
    for task, data, metric in (("captioning", "cap", ("per-caption", "rouge1")), ("vqa", "vqa", ("generic", "exact_match")),
                               ("conversation", "conv", ("teacher-forced", "token_f1"))):
        items, _ = build_items(get_task(task), data=str(tmp_path / data), split="test")
        assert items, task
        for it in items:
            it["prediction"] = it["reference"]
        result, _ = score_items(task, items, n_resamples=0)
        assert result["metrics"][metric[0]][metric[1]]["value"] == pytest.approx(1.0), task
        assert result["parse_failures"] == 0
    vqa_items, _ = build_items(get_task("vqa"), data=str(tmp_path / "vqa"), split="test")
    for it in vqa_items:
        it["prediction"] = "No."
    result, _ = score_items("vqa", vqa_items, n_resamples=0)
    assert result["metrics"]["generic"]["closed_exact_match"]["value"] == 0.0


@pytest.mark.slow
def test_run_evaluation_tiny_model_on_imported_imagefolder(tmp_path):
    import torch

    from pathinsight_models.evaluation.runner import run_evaluation
    from pathinsight_models.tiny import save_tiny_model

    torch.set_num_threads(1)
    import_dataset(_imagefolder(tmp_path / "in", per_class=5), tmp_path / "ds", format="imagefolder",
                   splits="0.4,0,0.6")
    model = save_tiny_model("llava", tmp_path / "tiny", seed=0)
    res = run_evaluation(str(model), str(tmp_path / "ds"), ["classification"], output=tmp_path / "ev",
                         batch_size=4, n_resamples=10, max_new_tokens=4, progress=False)
    r = res["tasks"]["classification"]
    assert r["n"] == 9 and r["data"]["labels"] == list(CLASSES)
    assert r["extras"]["confusion_labels"] == [*CLASSES, "unparsed"]
    assert sum(map(sum, r["extras"]["confusion_matrix"])) == 9
    assert (tmp_path / "ev" / "confusion_classification.png").is_file()
    lines = (tmp_path / "ev" / "predictions" / "classification.jsonl").read_text().splitlines()
    assert len(lines) == 9 and all("parsed" in json.loads(line) for line in lines)
    # the CLI with --labels (a subset of the classes: references outside it are an input error)
    argv = ["eval", "--model", str(model), "--data", str(tmp_path / "ds"), "--tasks", "classification",
            "--max-new-tokens", "4", "--bootstrap", "0", "--no-progress"]
    assert main([*argv, "--labels", "tumor,stroma,adipose", "--output", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())["tasks"]["classification"]
    assert cli["data"]["labels"] == ["tumor", "stroma", "adipose"] and cli["data"]["labels_from"] == "--labels"
    assert main([*argv, "--labels", "tumor,stroma", "--output", str(tmp_path / "bad")]) == 2
    assert main(["eval", "--model", str(model), "--data", str(tmp_path / "ds"), "--tasks", "crc", "--labels", "a,b",
                 "--output", str(tmp_path / "bad2")]) == 2
