"""Knowledge track wiring: guarded outputs, the `explanation` evaluation task, chat with similar cases, demo flag."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from pathenhanceds.errors import InputError
from pathinsight_models.cli import main
from pathinsight_models.knowledge.build import build_knowledge
from pathinsight_models.knowledge.synthetic import write_synthetic_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield 0o750
    finally:
        os.umask(old)


TINY = {"train": 1, "validation": 1, "test": 1}


# ------------------------------------------------------------------------------------------ output guard
def test_synthetic_writer_is_guarded(tmp_path, umask_027, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    before = _tree(mine)
    for overwrite in (False, True):
        with pytest.raises(InputError, match="already exists" if not overwrite else
                           "not an earlier `pathinsight knowledge synthetic` output"):
            write_synthetic_dataset(mine, TINY, overwrite=overwrite)
    assert main(["knowledge", "synthetic", "--output", str(mine), "--per-class", "1", "--overwrite"]) == 2
    assert "delete it yourself" in capsys.readouterr().err
    assert _tree(mine) == before

    out = tmp_path / "cells"
    stale = tmp_path / f".cells.tmp-{_dead_pid()}-0123abcd"  # left by a killed run
    stale.mkdir()
    write_synthetic_dataset(out, TINY)
    assert _mode(out) == umask_027  # the umask, not mkdtemp's 0700
    assert not stale.exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"] == "pathinsight_models.knowledge.synthetic"
    (out / "extra.txt").write_text("stale")
    with pytest.raises(InputError, match="already exists"):
        write_synthetic_dataset(out, TINY)
    write_synthetic_dataset(out, TINY, seed=1, overwrite=True)  # an earlier synthetic output is replaced
    assert not (out / "extra.txt").exists() and json.loads((out / "manifest.json").read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_knowledge_build_refuses_before_any_work(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "cells", TINY)
    data_before = _tree(data)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="not an earlier `pathinsight knowledge build` output"):
        build_knowledge(data, mine, overwrite=True, progress=False)
    other = write_synthetic_dataset(tmp_path / "other", TINY)  # another command's output
    with pytest.raises(InputError, match="not an earlier `pathinsight knowledge build` output"):
        build_knowledge(data, other, overwrite=True, progress=False)
    for output, relation in ((data, "is the input"), (data / "K", "lies inside the input"),
                             (tmp_path, "contains the input")):
        with pytest.raises(InputError, match=relation):
            build_knowledge(data, output, overwrite=True, progress=False)
    assert main(["knowledge", "build", "--data", str(data), "--output", str(mine), "--overwrite"]) == 2
    assert "--overwrite replaces only such folders" in capsys.readouterr().err
    assert _tree(data) == data_before and (mine / "results.csv").read_text() == "a,b\n"


@pytest.mark.slow
def test_knowledge_build_replaces_an_earlier_build_and_follows_the_umask(tmp_path, umask_027):
    data = write_synthetic_dataset(tmp_path / "cells", {"train": 3, "validation": 1, "test": 1})
    out = tmp_path / "K"
    first = build_knowledge(data, out, seed=0, progress=False)
    assert _mode(out) == umask_027 and first.manifest["generator"] == "pathinsight_models.knowledge.build"
    (out / "extra.txt").write_text("stale")
    with pytest.raises(InputError, match="already exists"):
        build_knowledge(data, out, progress=False)
    again = build_knowledge(data, out, seed=0, overwrite=True, progress=False)
    assert not (out / "extra.txt").exists() and again.digest == first.digest
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_demo_knowledge_refuses_a_foreign_folder(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["demo", "--knowledge", "--output", str(mine)]) == 2
    assert "not an earlier `pathinsight demo` output" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------- explanation task
CLASSES = ["inflammation", "normal", "tumor"]
TABLE_A = {"id": "a", "label": "tumor", "classes": CLASSES, "nodes": 10,
           "node_density": {"upper-left": 5.0, "upper-right": 1.0, "lower-left": 0.0, "lower-right": 2.0},
           "top_nodes": [{"quadrant": "upper-left", "features": ["area", "perimeter"]},
                         {"quadrant": "lower-right", "features": ["solidity", "eccentricity"]}],
           "top_edges": [{"quadrant": "upper-right", "features": ["length", "area_difference"]}]}
TABLE_B = {"id": "b", "label": "normal", "classes": CLASSES, "nodes": 3,
           "node_density": {"upper-left": 0.0, "upper-right": 0.0, "lower-left": 3.0, "lower-right": 0.0},
           "top_nodes": [{"quadrant": "lower-left", "features": ["local_density", "hematoxylin"]}], "top_edges": []}


def _lines() -> list[dict]:
    return [
        {"id": "a#knowledge_stage1", "kind": "diagnosis", "label": "tumor", "table": TABLE_A,
         "prediction": "The diagnosis is normal.", "reference": "The diagnosis is tumor."},
        {"id": "b#knowledge_stage1", "kind": "diagnosis", "label": "normal", "table": TABLE_B,
         "prediction": "Normal.", "reference": "The diagnosis is normal."},
        {"id": "a#knowledge_stage2", "kind": "explanation", "label": "tumor", "table": TABLE_A,
         "prediction": "The diagnosis is tumor. Nuclei in the upper-left quadrant show high area; note the "
                       "orientation.", "reference": "..."},
        {"id": "b#knowledge_stage2", "kind": "explanation", "label": "normal", "table": TABLE_B,
         "prediction": "It is hard to say.", "reference": "..."},
    ]


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_explanation_task_scores_a_predictions_file(tmp_path, capsys):
    preds = _write(tmp_path / "preds.jsonl", _lines())
    out = tmp_path / "scored"
    assert main(["eval", "score", "--task", "explanation", "--predictions", str(preds), "--output", str(out),
                 "--bootstrap", "0"]) == 0
    result = json.loads((out / "results.json").read_text())["tasks"]["explanation"]
    values = {mode: {k: v["value"] for k, v in m.items()} for mode, m in result["metrics"].items()}
    # Diagnosis: references tumor, normal; answers normal, normal -> recall 0 and 1; F1 0 (tumor) and
    # 2/3 (normal: precision 1/2, recall 1), macro over the classes present.
    assert values["diagnosis"] == pytest.approx({"balanced_accuracy": 0.5, "f1": 1 / 3, "accuracy": 0.5})
    # Explanation A: the table's top features {area, solidity, edge length} and top quadrants {upper-left,
    # upper-right}; the answer names area, orientation, upper-left -> coverage 2/5, precision 2/3.
    # Explanation B names nothing -> coverage 0, left out of precision. Stated diagnoses: tumor, none.
    assert values["explanation"] == pytest.approx({"grounding_coverage": 0.2, "grounding_precision": 2 / 3,
                                                   "balanced_accuracy": 0.5, "f1": 0.5})
    assert result["parse_failures"] == 1 and result["extras"]["answers_naming_nothing"] == 1
    assert "Grounding coverage" in capsys.readouterr().out
    records = [json.loads(x) for x in (out / "predictions" / "explanation.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["diagnosis", "diagnosis", "explanation", "explanation"]
    assert records[2]["scores"]["grounding_coverage"] == pytest.approx(0.4) and records[2]["table"] == TABLE_A

    only = tmp_path / "only"
    assert main(["eval", "score", "--task", "explanation", "--mode", "explanation", "--predictions", str(preds),
                 "--output", str(only), "--bootstrap", "0"]) == 0
    assert list(json.loads((only / "results.json").read_text())["tasks"]["explanation"]["metrics"]) == ["explanation"]

    bad = _lines()
    del bad[1]["table"]
    assert main(["eval", "score", "--task", "explanation", "--predictions",
                 str(_write(tmp_path / "bad.jsonl", bad)), "--output", str(tmp_path / "bad")]) == 2
    assert "has no knowledge table" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_k(tmp_path_factory):
    """A tiny knowledge dataset (3 classes: train 4, validation 2, test 2 per class) and a tiny LLaVA."""
    from pathinsight_models.tiny import save_tiny_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("wiring")
    data = write_synthetic_dataset(root / "cells", {"train": 4, "validation": 2, "test": 2}, seed=0)
    result = build_knowledge(data, root / "K", seed=0, progress=False)
    model = save_tiny_model("llava", root / "llava", seed=0)
    return root, result, model


@pytest.mark.slow
def test_eval_explanation_task_on_a_knowledge_dataset(tiny_k, capsys):
    from pathinsight_models.evaluation.runner import score_file

    root, result, model = tiny_k
    out = root / "eval"
    assert main(["eval", "--model", str(model), "--data", str(result.output), "--tasks", "explanation",
                 "--output", str(out), "--max-new-tokens", "6", "--bootstrap", "20", "--no-progress"]) == 0
    assert "explanation: n=12" in capsys.readouterr().out  # 6 test images x (diagnosis, explanation)
    results = json.loads((out / "results.json").read_text())
    task = results["tasks"]["explanation"]
    assert task["data"]["configs"] == ["knowledge_stage1", "knowledge_stage2"]
    assert task["data"]["digest"] == result.digest and task["data"]["rows"] == 6
    assert set(task["metrics"]) == {"diagnosis", "explanation"}
    for mode in task["metrics"].values():
        assert all(v["value"] is None or 0 <= v["value"] <= 1 for v in mode.values())
    assert task["rendered_prompt_example"].count("<image>") == 1
    rescored = score_file("explanation", out / task["predictions"], output=root / "rescored", n_resamples=20)
    assert rescored["tasks"]["explanation"]["metrics"] == task["metrics"]  # the file carries kinds and tables
    with pytest.raises(InputError, match="not a knowledge dataset"):
        from pathinsight_models.evaluation.runner import run_evaluation

        run_evaluation(str(model), str(root / "cells"), ["explanation"], output=root / "eval2")


# --------------------------------------------------------------------------------- chat + similar cases
@pytest.mark.slow
def test_chat_puts_similar_cases_into_the_prompt(tiny_k, capsys):
    from datasets import load_dataset

    from pathinsight_models.chat import answer, check_several_images, load
    from pathinsight_models.knowledge.retrieval import CaseRetriever

    root, result, model_dir = tiny_k
    image = root / "query.png"
    load_dataset(str(result.output), "knowledge_stage1", split="test")[0]["images"][0].save(image)
    question = "What is the diagnosis for this histopathology image?"
    argv = ["chat", "--model", str(model_dir), "--image", str(image), "--question", question,
            "--max-new-tokens", "5", "--device", "cpu"]
    assert main([*argv, "--knowledge", str(result.output), "--retrieve", "2"]) == 0
    captured = capsys.readouterr()
    image_pil = _open(image)
    cases = CaseRetriever(result.output, "embedding").search(image_pil, 2)
    assert all(f"{c['id']} ({c['label']})" in captured.err for c in cases)
    rates = result.manifest["retrieval"]
    assert (f"hit rate at build (test): quadrant {rates['quadrant']['hit_rate']:.3f}, "
            f"embedding {rates['embedding']['hit_rate']:.3f}") in captured.err

    model, processor = load(str(model_dir), device="cpu")
    seen: list[int] = []  # images reaching the vision tower (a real forward hook, no stand-in)
    handle = model.model.vision_tower.register_forward_pre_hook(lambda mod, args, kw: seen.append(
        (args[0] if args else kw["pixel_values"]).shape[0]), with_kwargs=True)
    try:
        with_cases = answer(model, processor, image_pil, question, 5, cases=cases)
        plain = answer(model, processor, image_pil, question, 5)
    finally:
        handle.remove()
    assert seen == [3, 1]
    assert captured.out.strip() == with_cases
    assert main(argv) == 0 and capsys.readouterr().out.strip() == plain

    # A processor whose chat template shows one image per prompt cannot take the cases.
    single = processor.chat_template.replace("{% for content in message['content'] | selectattr('type', "
                                             "'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}",
                                             "{{ '<image>\n' }}")
    assert single != processor.chat_template
    processor.chat_template = single
    with pytest.raises(InputError, match="does not take 3 images in one prompt"):
        check_several_images(processor, 3, "tiny")

    for extra, message in ((["--retrieve", "2"], "--retrieve needs --knowledge"),
                           (["--knowledge", str(root / "cells")], "not a knowledge folder")):
        assert main([*argv, *extra]) == 2
        assert message in capsys.readouterr().err
    no_image = ["chat", "--model", str(model_dir), "--question", question, "--knowledge", str(result.output)]
    assert main(no_image) == 2 and "pass --image" in capsys.readouterr().err


def _open(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")
