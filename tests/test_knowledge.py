"""Knowledge-grounded explanations: segmentation, cell graphs, GNN, IG, tables, teachers, build, two stages."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from pathenhanceds.errors import InputError
from pathinsight_models.knowledge.attribution import faithfulness, focus_share, integrated_gradients
from pathinsight_models.knowledge.explain_eval import parse_diagnosis, score_explanations
from pathinsight_models.knowledge.gnn import (
    TrainedGNN,
    baseline_statistics_lr,
    classification_report,
    train_gnn,
)
from pathinsight_models.knowledge.graph import QUADRANTS, GraphConfig, image_to_graph, quadrant_vector
from pathinsight_models.knowledge.retrieval import Index, hit_rate
from pathinsight_models.knowledge.segment import get_segmenter, segmentation_quality
from pathinsight_models.knowledge.synthetic import DEFINING_FEATURES, make_patches
from pathinsight_models.knowledge.tables import build_table, table_vocabulary
from pathinsight_models.knowledge.teacher import get_teacher, grounded, template_qa

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _graphs(n: int, seed: int, mode: str = "whole"):
    patches = make_patches(n, seed=seed, mode=mode)
    return patches, [image_to_graph(p.image, label=p.label, id=f"{seed}/{k}") for k, p in enumerate(patches)]


@pytest.fixture(scope="module")
def whole():
    """Whole-mode graphs (train 8/class, validation 3/class, test 5/class) and a GNN trained on them."""
    torch.set_num_threads(1)
    _, train = _graphs(8, 1)
    _, val = _graphs(3, 2)
    patches, test = _graphs(5, 3)
    model = train_gnn(train, val, seed=0)
    return {"train": train, "val": val, "test": test, "test_patches": patches, "model": model}


def test_segmentation_f1_on_synthetic_nuclei():
    for stress, floor in ((False, 0.95), (True, 0.85)):
        quality = segmentation_quality(make_patches(3, seed=7, stress=stress), get_segmenter("classical"))
        assert quality["f1"] >= floor, quality
    with pytest.raises(InputError, match="did you mean 'classical'"):
        get_segmenter("clasical")


def test_graph_features_and_quadrants():
    patch = make_patches(1, seed=4)[2]  # a tumor patch
    g = image_to_graph(patch.image, label=patch.label)
    assert g.num_nodes == pytest.approx(len(patch.centres), abs=2)
    assert g.node_features.shape == (g.num_nodes, 8) and g.edge_features.shape == (g.num_edges, 4)
    s, t = g.edge_index  # both directions present, no self loops
    assert set(zip(s.tolist(), t.tolist(), strict=True)) == set(zip(t.tolist(), s.tolist(), strict=True))
    assert (s != t).all()
    lower = g.centroids[:, 0] >= 64
    right = g.centroids[:, 1] >= 64
    assert (g.quadrant == lower * 2 + right).all()
    qv = quadrant_vector(g)
    assert qv.shape == (8,) and qv[:4].sum() * (64 * 64 / 1e4) == pytest.approx(g.num_nodes)
    sin, cos = g.node_features[:, 4], g.node_features[:, 5]
    assert np.allclose(sin**2 + cos**2, 1, atol=1e-5)  # orientation as sin/cos 2θ
    empty = image_to_graph(np.full((64, 64, 3), 240, np.uint8))
    assert empty.num_nodes == 0 and quadrant_vector(empty).sum() == 0
    dela = image_to_graph(patch.image, GraphConfig(edges="delaunay", max_distance=30.0))
    assert dela.num_edges > 0 and dela.edge_features[:, 0].max() <= 30.0  # column 0 = edge length
    knn = image_to_graph(patch.image, GraphConfig(k=3, max_distance=30.0))
    assert np.bincount(knn.edge_index[0]).min() >= 1 and knn.edge_features[:, 0].max() <= 30.0


def test_gnn_learns_the_synthetic_classes_and_reloads(whole, tmp_path):
    model, test = whole["model"], whole["test"]
    refs = [g.label for g in test]
    report = classification_report(model.predict(test), refs, model.classes)
    baseline = classification_report(baseline_statistics_lr(whole["train"], test, model.classes), refs, model.classes)
    print(f"whole mode: GNN balanced accuracy {report['balanced_accuracy']:.3f}, "
          f"LR on graph statistics {baseline['balanced_accuracy']:.3f}")
    assert report["balanced_accuracy"] >= 0.9
    again = TrainedGNN.load(model.save(tmp_path / "gnn"))
    assert np.allclose(again.predict_proba(test), model.predict_proba(test), atol=1e-6)


@pytest.mark.slow
def test_gnn_training_is_seeded(whole):
    again = train_gnn(whole["train"], whole["val"], seed=0)
    assert np.allclose(again.predict_proba(whole["test"]), whole["model"].predict_proba(whole["test"]), atol=1e-6)
    assert again.history == whole["model"].history


def test_integrated_gradients_credit_the_defining_feature(whole):
    model = whole["model"]
    result = faithfulness(model, whole["test"], DEFINING_FEATURES)
    print("IG faithfulness (whole mode, mean+max):", result)
    assert result["graphs"] >= 8
    assert result["top_feature_share"] >= 0.8  # measured 1.0
    g = whole["test"][0]
    a = integrated_gradients(model, g)
    assert a.node.shape == g.node_features.shape and a.edge.shape == g.edge_features.shape
    # Completeness: attributions sum to the logit difference between input and baseline.
    assert a.delta < 0.05 * max(1.0, float(np.abs(a.node).sum() + np.abs(a.edge).sum()))


@pytest.mark.slow
def test_focus_mode_gnn_vs_baseline_and_focus_localisation():
    _, train = _graphs(60, 11, "focus")
    _, val = _graphs(20, 12, "focus")
    patches, test = _graphs(30, 13, "focus")
    model = train_gnn(train, val, seed=0)
    refs = [g.label for g in test]
    gnn = classification_report(model.predict(test), refs, model.classes)["balanced_accuracy"]
    lr = classification_report(baseline_statistics_lr(train, test, model.classes), refs, model.classes)[
        "balanced_accuracy"]
    shares = [focus_share(integrated_gradients(model, g), g, p.focus) for p, g in zip(patches, test, strict=True)
              if p.focus and model.predict([g])[0] == g.label]
    print(f"focus mode: GNN {gnn:.3f} vs LR {lr:.3f}; top-5 IG nodes inside the focus {np.mean(shares):.3f}")
    # Measured over 3 GNN seeds on another draw: GNN 0.913-0.953 vs LR 0.933 (docs/knowledge.md): on par, not better.
    assert gnn >= 0.85 and gnn >= lr - 0.03
    assert np.mean(shares) >= 0.7


def _table(whole, k: int = 0):
    g = whole["test"][k]
    return build_table(g, integrated_gradients(whole["model"], g), whole["model"], split="test")


def test_template_qa_is_grounded_and_the_check_rejects_inventions(whole):
    for k in range(len(whole["test"])):
        table = _table(whole, k)
        qa = template_qa(table)
        assert qa.stage1[1][1] == f"The diagnosis is {table['label']}."
        for role, text in qa.stage1 + qa.stage2:
            if role == "assistant":
                assert grounded(text, table, require_label=False)[0], text
    table = _table(whole)
    vocab = table_vocabulary(table)
    assert {n["quadrant"] for n in table["top_nodes"]} <= set(QUADRANTS)
    missing = sorted({"area", "perimeter", "solidity", "local density", "orientation"} - vocab["features"])
    assert missing, vocab
    bad = f"The diagnosis is {table['label']}; note the {missing[0]} of the nuclei."
    assert grounded(bad, table, require_label=True) == (False, f"names features not in the table: {[missing[0]]}")
    other = next(c for c in table["classes"] if c != table["label"])
    assert not grounded(f"The diagnosis is {table['label']}, not {other}.", table, require_label=True)[0]
    assert not grounded("Nuclei.", table, require_label=True)[0]
    empty = image_to_graph(np.full((64, 64, 3), 240, np.uint8), label="normal", id="blank")
    blank = build_table(empty, integrated_gradients(whole["model"], empty), whole["model"], split="test")
    assert blank["top_nodes"] == [] and blank["nodes"] == 0
    assert [t for t in template_qa(blank).stage2 if t[0] == "assistant"] == [("assistant", "The diagnosis is normal.")]


def test_explanation_scoring(whole):
    tables = [_table(whole, k) for k in range(6)]
    answers = [template_qa(t).stage2[1][1] for t in tables]
    scores = score_explanations(answers, tables)
    assert scores["grounding_precision"] == 1.0 and scores["grounding_coverage"] > 0
    assert scores["balanced_accuracy"] == 1.0 and scores["macro_f1"] == 1.0
    wrong = score_explanations(["It is hard to say."] * 6, tables)
    assert wrong["balanced_accuracy"] == 0 and wrong["answers_naming_nothing"] == 6
    assert parse_diagnosis("Tumor, not normal.", ["normal", "tumor"]) is None
    assert parse_diagnosis("The diagnosis is tumor.", ["normal", "tumor"]) == "tumor"


def test_retrieval_hit_rates(whole, tmp_path):
    train, test, model = whole["train"], whole["test"], whole["model"]
    ids, labels = [g.id for g in train], [g.label for g in train]
    refs = [g.label for g in test]
    quad = Index.build("quadrant", np.stack([quadrant_vector(g) for g in train]), ids, labels)
    emb = Index.load(Index.build("embedding", model.embeddings(train), ids, labels).save(tmp_path / "e.npz"))
    rates = {"quadrant": hit_rate(quad, np.stack([quadrant_vector(g) for g in test]), refs),
             "embedding": hit_rate(emb, model.embeddings(test), refs)}
    print("nearest-neighbour label hit rate:", rates)
    assert rates["embedding"] >= 0.8 and rates["quadrant"] > 1 / 3


class _ChatServer(BaseHTTPRequestHandler):
    replies: list[str] = []
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"auth": self.headers.get("Authorization"), "body": body, "path": self.path})
        prompt = body["messages"][0]["content"]
        text = type(self).replies.pop(0) if type(self).replies else prompt.split("\nAnswer: ")[1].split("\n")[0]
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_teacher_against_a_loopback_server(whole, monkeypatch):
    table = _table(whole)
    missing = sorted({"area", "perimeter", "solidity", "local density", "orientation"} - table_vocabulary(table)["features"])
    _ChatServer.replies = [f"Clearly {table['label']}: the diagnosis is {table['label']}.",
                           f"The diagnosis is {table['label']} because of the {missing[0]}."]
    _ChatServer.seen = []
    server = HTTPServer(("127.0.0.1", 0), _ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    try:
        teacher = get_teacher(f"openai:http://127.0.0.1:{server.server_port}/v1#tiny-chat")
        qa = teacher(table)
    finally:
        server.shutdown()
        server.server_close()
    assert qa.stage1[1][1].startswith("Clearly")  # accepted rewrite
    assert qa.stage2[1][1] == template_qa(table).stage2[1][1]  # rejected rewrite → template answer
    verdicts = [r["accepted"] for r in qa.records]
    assert verdicts[:2] == [True, False] and all(verdicts[2:])
    assert all(r["model"].endswith("#tiny-chat") and "Rewritten answer" in r["prompt"] for r in qa.records)
    assert {s["auth"] for s in _ChatServer.seen} == {"Bearer sk-test-secret"}
    assert {s["path"] for s in _ChatServer.seen} == {"/v1/chat/completions"}
    assert "sk-test-secret" not in json.dumps(qa.records)
    with pytest.raises(InputError, match="bad openai teacher"):
        get_teacher("openai:http://127.0.0.1:1/v1")


@pytest.mark.slow
def test_hf_teacher_with_a_tiny_random_lm(whole, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from pathinsight_models.tiny import build_tokenizer

    tok = build_tokenizer(["<unk>", "<s>", "</s>", "<pad>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                      max_position_embeddings=1024, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    table = _table(whole)
    teacher = get_teacher(f"hf:{tmp_path / 'lm'}")
    first, second = teacher(table), teacher(table)
    assert [r["output"] for r in first.records] == [r["output"] for r in second.records]  # greedy
    assert first.records and all(r["model"] == "hf:lm" for r in first.records)
    for record, (_role, text) in zip(first.records, [t for t in first.stage1 + first.stage2 if t[0] == "assistant"],
                                    strict=True):
        assert grounded(text, table, require_label=False)[0]
        if not record["accepted"]:
            assert text in [t[1] for t in template_qa(table).stage1 + template_qa(table).stage2]
    assert not all(r["accepted"] for r in first.records)  # random text does not keep the diagnosis


@pytest.fixture(scope="module")
def knowledge(tmp_path_factory):
    from pathinsight_models.knowledge.build import build_knowledge
    from pathinsight_models.knowledge.synthetic import write_synthetic_dataset

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("knowledge")
    data = write_synthetic_dataset(root / "cells", {"train": 6, "validation": 2, "test": 3}, seed=0)
    return data, build_knowledge(data, root / "K", seed=0, progress=False)


@pytest.mark.slow
def test_build_writes_a_loadable_two_stage_dataset(knowledge, tmp_path):
    from datasets import load_dataset

    from pathinsight_models.knowledge.build import build_knowledge
    from pathinsight_models.knowledge.tables import read_tables

    data, result = knowledge
    out = result.output
    for cfg in ("knowledge_stage1", "knowledge_stage2"):
        ds = load_dataset(str(out), cfg)
        assert {s: len(ds[s]) for s in ds} == {"train": 18, "validation": 6, "test": 9}
        row = ds["train"][0]
        assert row["images"][0].size == (128, 128) and row["messages"][0]["content"][0]["type"] == "image"
        assert row["label"] in ("normal", "inflammation", "tumor")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["digest"] == result.digest and manifest["input"]["config"] == "classification"
    assert manifest["gnn"]["test"]["balanced_accuracy"] >= 0.6
    assert set(manifest["retrieval"]) == {"quadrant", "embedding"}
    for f in ("gnn/gnn.safetensors", "gnn/confusion.png", "gnn/metrics.json", "tables/test.parquet",
              "index/quadrant.npz", "index/embedding.npz", "README.md"):
        assert (out / f).is_file(), f
    tables = read_tables(out / "tables" / "test.parquet")
    assert len(tables) == 9 and all(len(t["top_nodes"]) == 5 for t in tables if t["nodes"] >= 5)
    again = build_knowledge(data, tmp_path / "K2", seed=0, progress=False)
    assert again.digest == result.digest  # same input and seed, same content
    with pytest.raises(InputError, match="already exists"):
        build_knowledge(data, out)
    with pytest.raises(InputError, match="unknown teacher"):
        build_knowledge(data, tmp_path / "K3", teacher="gpt")
    assert not (tmp_path / "K3").exists()


@pytest.mark.slow
def test_both_stages_train_a_tiny_vlm(knowledge, tmp_path):
    from transformers import AutoModelForImageTextToText

    from pathinsight_models.tiny import save_tiny_model
    from pathinsight_models.training import train

    _, result = knowledge
    base = save_tiny_model("llava", tmp_path / "tiny", seed=0)
    small = {"max_steps": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "bf16": False,
             "activation_checkpointing": False, "eval_strategy": "no", "save_strategy": "no", "logging_steps": 1,
             "max_length": 512, "lora_r": 4, "lora_alpha": 8, "dataset_name": str(result.output)}
    s1 = train(RECIPES / "knowledge_stage1.yaml", model_name_or_path=str(base), output_dir=str(tmp_path / "s1"),
               **{k: v for k, v in small.items() if not k.startswith("lora")})
    s2 = train(RECIPES / "knowledge_stage2.yaml", model_name_or_path=str(s1), output_dir=str(tmp_path / "s2"),
               **small)
    before = dict(AutoModelForImageTextToText.from_pretrained(base).named_parameters())
    after = dict(AutoModelForImageTextToText.from_pretrained(s1).named_parameters())
    lm = [n for n in before if ".language_model." in n or n.startswith("lm_head")]
    assert lm and all(torch.equal(before[n], after[n]) for n in lm)  # stage 1: language model frozen
    assert any(not torch.equal(before[n], after[n]) for n in before if "multi_modal_projector" in n)
    assert (s2 / "adapter_model.safetensors").is_file()
    logged = [json.loads(line) for line in (s2 / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in entry for entry in logged)


@pytest.mark.slow
def test_build_with_an_llm_teacher_records_every_rewrite(knowledge, tmp_path, monkeypatch):
    from pathinsight_models.knowledge.build import build_knowledge

    data, template_build = knowledge
    _ChatServer.replies, _ChatServer.seen = [], []  # echo mode: each rewrite returns the template answer
    server = HTTPServer(("127.0.0.1", 0), _ChatServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    spec = f"openai:http://127.0.0.1:{server.server_port}/v1#tiny-chat"
    try:
        result = build_knowledge(data, tmp_path / "K", teacher=spec, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    lines = [json.loads(x) for x in (result.output / "teacher.jsonl").read_text().splitlines()]
    teacher = result.manifest["teacher"]
    assert teacher["spec"] == spec and teacher["rewrites"] == len(lines) == len(_ChatServer.seen) > 33
    assert teacher["accepted"] == len(lines) and all(x["prompt"] and x["model"] == spec for x in lines)
    assert result.digest == template_build.digest  # echoed answers = the template dataset, byte for byte
    assert not any("sk-test-secret" in p.read_text(errors="ignore") for p in result.output.rglob("*")
                   if p.is_file() and p.suffix in (".json", ".jsonl", ".md"))


@pytest.mark.slow
def test_similar_cases_from_a_knowledge_folder(knowledge):
    from datasets import load_dataset

    from pathinsight_models.knowledge.retrieval import CaseRetriever

    _, result = knowledge
    test = load_dataset(str(result.output), "knowledge_stage1", split="test")
    hits = {}
    for kind in ("quadrant", "embedding"):
        retriever = CaseRetriever(result.output, kind)
        cases = retriever.search(test[0]["images"][0], k=3)
        assert [c["rank"] for c in cases] == [0, 1, 2] and all(c["image"].size == (128, 128) for c in cases)
        assert all(c["id"].startswith("synthetic/train/") for c in cases)
        nearest = [retriever.search(row["images"][0], k=1, with_images=False)[0]["label"] for row in test]
        hits[kind] = float(np.mean([n == row["label"] for n, row in zip(nearest, test, strict=True)]))
        # The same images through the same pipeline: the build's recorded hit rate.
        assert hits[kind] == pytest.approx(result.manifest["retrieval"][kind]["hit_rate"])
    print("hit rate via CaseRetriever:", hits)
    with pytest.raises(InputError, match="unknown retrieval index"):
        CaseRetriever(result.output, "clip")


@pytest.mark.slow
def test_cli_build_and_input_errors(knowledge, tmp_path, capsys):
    from pathinsight_models.cli import main

    data, _ = knowledge
    assert main(["knowledge", "build", "--data", str(data), "--output", str(tmp_path / "K"), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "balanced accuracy" in out and "hit rate" in out and (tmp_path / "K" / "manifest.json").is_file()
    assert main(["knowledge", "build", "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "K2")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert main(["knowledge", "build", "--data", str(data), "--output", str(tmp_path / "K3"),
                 "--config", "captioning"]) == 2
    assert not (tmp_path / "K3").exists()
    assert main(["knowledge", "build", "--data", str(data), "--output", str(tmp_path / "K4"), "--source", "pcam"]) == 2
    assert "sources present: ['synthetic_cells']" in capsys.readouterr().err


@pytest.mark.slow
def test_knowledge_demo_runs_end_to_end(tmp_path):
    from pathinsight_models.knowledge.demo import run_knowledge_demo

    summary = run_knowledge_demo(tmp_path / "demo", per_class=4, steps=(2, 2), eval_limit=3, progress=False)
    assert 0 <= summary["gnn_balanced_accuracy"] <= 1 and set(summary["retrieval_hit_rate"]) == {"quadrant", "embedding"}
    assert len(summary["vlm_answers"]) == 3 and summary["vlm"]["n"] == 3
    assert summary["example_qa"]["stage1"][1][1].startswith("The diagnosis is")
    assert (tmp_path / "demo" / "summary.json").is_file() and (tmp_path / "demo" / "runs" / "stage2").is_dir()
    marker = json.loads((tmp_path / "demo" / ".pathinsight-demo.json").read_text())  # the guard's `demo` kind
    assert marker["generator"] == "pathinsight_models.demo" and marker["demo"] == "knowledge"
