"""Evaluation beyond one device: `accelerate launch -m pathinsight_models.evaluation` and the back-ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pathenhanceds.errors import InputError
from pathenhanceds.schema import make_messages
from pathinsight_models.evaluation.distributed import COMPARISON_EXCLUDED, comparable, shard_indices

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def spread_llava(tmp_path_factory) -> Path:
    """A tiny Llava whose weights are redrawn with std 0.1 (seed 2): its answers depend on the input and,
    on the sample build, score above zero with non-degenerate CIs, so "same metrics and CIs" means something."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pathinsight_models.tiny import save_tiny_model, spread_weights

    root = tmp_path_factory.mktemp("tiny")
    tiny = save_tiny_model("llava", root / "llava", seed=0)
    model = spread_weights(AutoModelForImageTextToText.from_pretrained(tiny), seed=2)
    model.save_pretrained(root / "spread")
    AutoProcessor.from_pretrained(tiny).save_pretrained(root / "spread")
    return root / "spread"


# ------------------------------------------------------------------------------------- sharding


def _items(groups: list[int]) -> list[dict]:
    return [{"id": f"i{k}", "group": f"g{g}"} for k, g in enumerate(groups)]


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_partition_the_items_into_contiguous_runs_of_whole_groups(count):
    groups = [0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 5, 6, 6, 7]
    items = _items(groups)
    shards = [shard_indices(items, k, count) for k in range(count)]
    assert sorted(i for s in shards for i in s) == list(range(len(items)))  # each item exactly once
    owner = {i: k for k, s in enumerate(shards) for i in s}
    for g in set(groups):  # whole groups
        assert len({owner[i] for i, x in enumerate(groups) if x == g}) == 1
    assert [owner[i] for i in range(len(items))] == sorted(owner[i] for i in range(len(items)))  # contiguous
    if count <= 3:
        assert all(shards)  # enough groups: nobody idles


def test_shards_keep_groups_that_are_not_adjacent_together_and_allow_empty_shards():
    items = _items([0, 1, 0, 1])
    assert shard_indices(items, 0, 2) == [0, 2] and shard_indices(items, 1, 2) == [1, 3]
    assert shard_indices(items[:1], 1, 2) == [] and shard_indices([], 0, 3) == []
    with pytest.raises(ValueError):
        shard_indices(items, 2, 2)


def test_comparable_drops_only_the_documented_fields():
    results = {"created": "t", "execution": {"processes": 2}, "model": {"id": "m", "device": "cuda:1"},
               "seed": 0, "tasks": {"crc": {"n": 3, "generation_seconds": 1.5}}}
    assert comparable(results) == {"model": {"id": "m"}, "seed": 0, "tasks": {"crc": {"n": 3}}}
    assert results["model"]["device"] == "cuda:1"  # the input is left alone
    assert set(COMPARISON_EXCLUDED) == {"created", "execution", "model.device", "tasks.*.generation_seconds"}


# ------------------------------------------------------------------------------- two processes

TASKS = "pcam,captioning,pathvqa"
EVAL_ARGS = ["--tasks", TASKS, "--batch-size", "4", "--bootstrap", "200", "--max-new-tokens", "16", "--no-progress"]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_eval_writes_the_single_process_results(spread_llava, sample_build, tmp_path):
    from pathinsight_models.evaluation.__main__ import main as eval_main

    one = tmp_path / "one"
    assert eval_main(["--model", str(spread_llava), "--data", str(sample_build.output), "--output", str(one),
                      *EVAL_ARGS]) == 0
    two = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs/accelerate/cpu_2proc.yaml"), "--main_process_port", "29541",
           "-m", "pathinsight_models.evaluation", "--model", str(spread_llava), "--data", str(sample_build.output),
           "--output", str(two), *EVAL_ARGS]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # only the main process reports

    a = json.loads((one / "results.json").read_text())
    b = json.loads((two / "results.json").read_text())
    assert a["execution"] == {"backend": "hf", "processes": 1, "sharding": None}
    assert b["execution"]["processes"] == 2 and b["execution"]["backend"] == "hf"
    for task in TASKS.split(","):
        lines = [(one / "predictions" / f"{task}.jsonl").read_text(), (two / "predictions" / f"{task}.jsonl").read_text()]
        assert lines[0] == lines[1], task  # same predictions, in the same order, with the same per-item scores
        assert a["tasks"][task]["metrics"] == b["tasks"][task]["metrics"], task  # same values and CIs
    assert comparable(a) == comparable(b)  # everything but timing and the process layout
    # Not a vacuous equality: answers depend on the input and some metrics have real intervals.
    preds = [json.loads(x)["prediction"] for x in (one / "predictions" / "captioning.jsonl").read_text().splitlines()]
    assert len(set(preds)) > len(preds) // 2
    spans = [m["ci"] for t in a["tasks"].values() for mode in t["metrics"].values() for m in mode.values()
             if isinstance(m, dict) and m.get("ci") and m["ci"][0] < m["ci"][1]]
    assert len(spans) >= 5


def test_score_subcommand_is_refused_under_a_launcher(monkeypatch, tmp_path, capsys):
    """`eval score` would have every process write the same folder: one process only."""
    from pathinsight_models.evaluation import distributed
    from pathinsight_models.evaluation.__main__ import main as eval_main

    monkeypatch.setattr(distributed, "current_processes", lambda: distributed.Processes(1, 2, "cpu"))
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prediction": "yes", "reference": "yes"}\n')
    assert eval_main(["score", "--task", "pcam", "--predictions", str(tmp_path / "p.jsonl")]) == 2
    assert "runs in one process" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ back-ends


def test_backend_registry_and_vllm_checks(spread_llava, tmp_path, capsys):
    from pathinsight_models.cli import main
    from pathinsight_models.evaluation.backends import BACKENDS, get_backend, list_backends, vllm_problem

    assert list_backends() == ["hf", "vllm"]
    assert get_backend("hf").name == "hf"
    with pytest.raises(InputError, match="vllm"):  # closest name
        BACKENDS.get("vlm")
    assert vllm_problem(installed=False, cuda=True) and "not installed" in vllm_problem(False, True)
    assert "CUDA GPU" in vllm_problem(installed=True, cuda=False)
    assert vllm_problem(installed=True, cuda=True) is None
    problem = vllm_problem(__import__("importlib").util.find_spec("vllm") is not None, torch.cuda.is_available())
    if problem is None:
        pytest.skip("vLLM and a GPU are present: the back-end is usable here")
    assert main(["eval", "--backend", "vllm", "--model", str(spread_llava), "--tasks", "pcam", "--data", str(tmp_path),
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert problem in err and "pathinsight[vllm]" in err and not (tmp_path / "o").exists()
    from pathinsight_models.leaderboard.runner import run_pending

    with pytest.raises(InputError, match="vllm"):  # before any request is claimed (no Hub call)
        run_pending("org/lb", data="org/PathEnhanceDS", backend="vllm")
    with pytest.raises(SystemExit) as exc:  # an unknown back-end is a usage error (argparse choices)
        main(["eval", "--backend", "onnx", "--model", "m", "--output", str(tmp_path / "o")])
    assert exc.value.code == 2


def _prompt_items() -> list[dict]:
    rng = np.random.default_rng(0)
    items = []
    for i, text in enumerate(["Is this malignant?", "Describe the image.", "Is this malignant?"]):
        image = Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).convert("L" if i == 1 else "RGB")
        items.append({"id": str(i), "messages": make_messages([("user", text)]), "image": image})
    items.append({"id": "text", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                  "image": None})
    return items


def test_both_backends_render_the_same_prompts_and_decoding(spread_llava):
    """vLLM gets exactly the chat-template text and image the transformers back-end feeds its processor,
    and sampling settings derived from the same greedy config."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig

    from pathinsight_models.evaluation.backends import vllm_inputs, vllm_sampling_kwargs
    from pathinsight_models.evaluation.generation import (
        _image,
        decoding_params,
        greedy_config,
        render_prompts,
    )

    processor = AutoProcessor.from_pretrained(spread_llava)
    items = _prompt_items()
    requests = vllm_inputs(processor, items)
    texts = render_prompts(processor, items)
    assert [r["prompt"] for r in requests] == texts
    assert texts[0] == processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is this malignant?"}]}],
        add_generation_prompt=True, tokenize=False)
    for request, item in zip(requests[:3], items[:3], strict=True):
        image = request["multi_modal_data"]["image"]
        assert image.mode == "RGB" and image.tobytes() == _image(item).tobytes()  # the image the HF path decodes
    assert "multi_modal_data" not in requests[3]

    model = AutoModelForImageTextToText.from_pretrained(spread_llava)
    gen = greedy_config(model, 12, processor.tokenizer.pad_token_id)
    sampling = vllm_sampling_kwargs(gen)
    decoding = decoding_params(gen)
    eos = decoding["eos_token_id"]
    assert sampling["max_tokens"] == decoding["max_new_tokens"] == 12
    assert sampling["stop_token_ids"] == ([eos] if isinstance(eos, int) else list(eos or []))
    assert sampling["temperature"] == 0.0 and sampling["skip_special_tokens"] is True
    assert sampling["repetition_penalty"] == (decoding["repetition_penalty"] or 1.0)
    with pytest.raises(InputError, match="no_repeat_ngram_size"):  # never silently dropped
        vllm_sampling_kwargs(greedy_config(
            type("M", (), {"generation_config": GenerationConfig(no_repeat_ngram_size=3, eos_token_id=2)})(), 8, 0))


@pytest.mark.slow
def test_vllm_backend_matches_hf_on_a_gpu(spread_llava, sample_build, tmp_path):
    """Runs only where vLLM and a CUDA GPU are present (float32 on both back-ends)."""
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("the vLLM back-end needs a CUDA GPU")
    from pathinsight_models.evaluation.runner import run_evaluation

    runs = {}
    for backend in ("hf", "vllm"):
        runs[backend] = run_evaluation(str(spread_llava), str(sample_build.output), ["pcam", "pathvqa"],
                                       output=tmp_path / backend, batch_size=4, n_resamples=0, max_new_tokens=16,
                                       dtype="float32", device="cuda", progress=False, backend=backend)
    assert runs["vllm"]["execution"]["backend"] == "vllm"
    for task in ("pcam", "pathvqa"):
        hf, vl = (runs[b]["tasks"][task] for b in ("hf", "vllm"))
        assert hf["rendered_prompt_example"] == vl["rendered_prompt_example"]
        assert hf["decoding"] == vl["decoding"] and hf["n"] == vl["n"]
        preds = [[json.loads(x) for x in (tmp_path / b / "predictions" / f"{task}.jsonl").read_text().splitlines()]
                 for b in ("hf", "vllm")]
        assert [p["id"] for p in preds[0]] == [p["id"] for p in preds[1]]
        same = sum(p["prediction"] == q["prediction"] for p, q in zip(*preds, strict=True))
        # Different kernels may flip the arg-max of a near tie in a random tiny model; nearly all must agree.
        assert same >= 0.9 * len(preds[0]), (task, same, len(preds[0]))
