"""`pathinsight_models.chat`, `pathinsight chat` and the Gradio chat demo, on adapter and merged Hub repos.

The repos are published with `push_model` from a real 2-step LoRA run of a tiny random LLaVA, so the
answers are tokens of an untrained-ish model: the tests check that every route (library, CLI, the
Space's Gradio API) gives exactly the answer of the local model, not what the answer says.
"""

from __future__ import annotations

import importlib.util
import io
import os
import socket
from pathlib import Path

import pytest
from support.hub_fixtures import blocked_network_attempts
from support.hub_server import HubServer

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio / gradio_client are imported
pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # every test uses the `repos` fixture: a training run + four pushes

from huggingface_hub import HfApi  # noqa: E402
from PIL import Image  # noqa: E402

from pathenhanceds.errors import InputError  # noqa: E402
from pathinsight_models.chat import answer, load  # noqa: E402
from pathinsight_models.cli import main  # noqa: E402
from pathinsight_models.publish import push_dataset  # noqa: E402
from pathinsight_models.publish.model import push_model  # noqa: E402
from pathinsight_models.tiny import save_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What type of tissue is shown?"
TOKENS = 8


@pytest.fixture(scope="module")
def repos(hub: HubServer, sample_build, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from pathinsight_models.training import train

    root = tmp_path_factory.mktemp("chat")
    base_dir = save_tiny_model("llava", root / "base", seed=2)
    (base_dir / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    base_id = hub.new_repo_id("chat-base")
    HfApi().create_repo(base_id)
    HfApi().upload_folder(repo_id=base_id, folder_path=str(base_dir))
    data_id = hub.new_repo_id("PathEnhanceDS")
    push_dataset(sample_build.output, data_id)
    run = train({"model_name_or_path": str(base_dir), "dataset_name": str(sample_build.output),
                 "output_dir": str(root / "run"), "max_train_samples": 4, "max_steps": 2,
                 "per_device_train_batch_size": 2, "learning_rate": 0.05, "save_strategy": "no",
                 "report_to": "none"})
    adapter_id, merged_id = hub.new_repo_id("chat-lora"), hub.new_repo_id("chat-merged")
    push_model(run, adapter_id, base_model_id=base_id, dataset_id=data_id)
    push_model(run, merged_id, merged=True, base_model_id=base_id, dataset_id=data_id)
    image = root / "patch.png"
    Image.new("RGB", (48, 40), (190, 70, 160)).save(image)
    return {"root": root, "base_dir": base_dir, "base_id": base_id, "run": run, "adapter": adapter_id,
            "merged": merged_id, "image": image}


def _local_answer(repos: dict, question: str = QUESTION) -> str:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = AutoModelForImageTextToText.from_pretrained(repos["base_dir"])
    model = PeftModel.from_pretrained(base, str(repos["run"])).eval()
    return answer(model, AutoProcessor.from_pretrained(repos["run"]), repos["image"], question, TOKENS)


def test_answer_from_adapter_and_merged_repos(repos: dict, tmp_path: Path):
    from pathinsight_models.training.artifacts import merge_adapter

    expected = _local_answer(repos)
    assert isinstance(expected, str) and expected  # greedy tokens of the tuned model, decoded
    model, processor = load(repos["adapter"])
    assert answer(model, processor, Image.open(repos["image"]), QUESTION, TOKENS) == expected
    # A pinned revision of an adapter repo (the base model repo has no such revision).
    sha = HfApi().model_info(repos["adapter"]).sha
    pinned, pinned_processor = load(repos["adapter"], revision=sha)
    assert answer(pinned, pinned_processor, repos["image"], QUESTION, TOKENS) == expected
    assert answer(model, processor, str(repos["image"]), QUESTION, TOKENS) == expected  # a path works too

    merged_local = merge_adapter(repos["run"], tmp_path / "merged", base_model=str(repos["base_dir"]))
    model_m, processor_m = load(repos["merged"])
    local_m, local_p = load(str(merged_local))
    assert answer(model_m, processor_m, repos["image"], QUESTION, TOKENS) == answer(
        local_m, local_p, repos["image"], QUESTION, TOKENS)
    text_only = answer(model, processor, None, QUESTION, TOKENS)
    assert isinstance(text_only, str)
    with pytest.raises(InputError, match="empty question"):
        answer(model, processor, repos["image"], "  ")
    with pytest.raises(InputError, match="not found"):
        answer(model, processor, tmp_path / "missing.png", QUESTION)


def test_cli_chat(repos: dict, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    expected = _local_answer(repos)
    argv = ["chat", "--model", repos["adapter"], "--image", str(repos["image"]), "--max-new-tokens", str(TOKENS)]
    assert main([*argv, "--question", QUESTION]) == 0
    assert capsys.readouterr().out == expected + "\n"
    # Without --question: one answer per line of standard input.
    second = "Is this tissue malignant?"
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{QUESTION}\n{second}\n"))
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == [expected, _local_answer(repos, second)]
    assert main(["chat", "--model", repos["adapter"], "--image", str(repos["root"] / "nope.png"), "--question", "x"]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_space_answers_through_gradio_api(repos: dict):
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    spec = importlib.util.spec_from_file_location("demo_space_app", ROOT / "hub_scripts" / "demo_space" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)

    blocked_before = len(blocked_network_attempts())
    demo = app.build_app(repos["merged"], max_new_tokens=TOKENS)
    _, url, share = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                                share=False, quiet=True)
    try:
        assert share is None and url.startswith("http://127.0.0.1:")
        client = Client(url, analytics_enabled=False, verbose=False)
        got = client.predict(handle_file(str(repos["image"])), QUESTION, api_name="/answer")
    finally:
        demo.close()
    model, processor = load(repos["merged"])
    assert got == answer(model, processor, repos["image"], QUESTION, TOKENS)
    assert blocked_network_attempts()[blocked_before:] == []  # Gradio and its client stayed on 127.0.0.1


def test_eval_runner_loads_an_adapter_repo_at_a_pinned_revision(repos: dict):
    """`from_pretrained(adapter_repo, revision=sha)` would look for `sha` in the base repo too."""
    from pathinsight_models.loading import load_for_inference

    sha = HfApi().model_info(repos["adapter"]).sha
    model, processor, info = load_for_inference(repos["adapter"], revision=sha, device="cpu")
    assert info["id"] == repos["adapter"] and info["revision"] == sha  # provenance names the repo, not a cache path
    assert info["commit"] == sha and info["base_model"] == repos["base_id"] and info["processor_from"] == repos["adapter"]
    assert answer(model, processor, repos["image"], QUESTION, TOKENS) == _local_answer(repos)
