"""`push_model` / `pathinsight push model` against the loopback Hub, on real tiny training runs.

The base model is a tiny random LLaVA published to the test Hub with a licence; the data is the
synthetic PathEnhanceDS build published with `push_dataset`; the run is a real `pathinsight train`
LoRA run (2 steps, high learning rate so the adapter visibly changes the model).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from support.hub_fixtures import TEST_TOKEN
from support.hub_server import HubServer, parse_card_data

torch = pytest.importorskip("torch")

from huggingface_hub import HfApi  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from pathenhanceds.errors import InputError  # noqa: E402
from pathinsight_models.cli import main  # noqa: E402
from pathinsight_models.publish import push_dataset  # noqa: E402
from pathinsight_models.publish.eval_results import benchmark_tasks, metric_value  # noqa: E402
from pathinsight_models.publish.model import push_model  # noqa: E402
from pathinsight_models.tiny import save_tiny_model  # noqa: E402

BASE_CARD = "---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: image-text-to-text\n---\n# tiny\n"


@pytest.fixture(scope="module")
def env(hub: HubServer, sample_build, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Base model + dataset on the test Hub, a LoRA training run and its evaluation results."""
    from pathinsight_models.evaluation.runner import run_evaluation
    from pathinsight_models.training import train

    root = tmp_path_factory.mktemp("push-model")
    base_dir = save_tiny_model("llava", root / "base", seed=0)
    base_id = hub.new_repo_id("tiny-llava-base")
    api = HfApi()
    api.create_repo(base_id)
    (root / "base" / "README.md").write_text(BASE_CARD)
    api.upload_folder(repo_id=base_id, folder_path=str(base_dir))
    data_id = hub.new_repo_id("PathEnhanceDS")
    push_dataset(sample_build.output, data_id)
    run = train(
        {"model_name_or_path": str(base_dir), "dataset_name": str(sample_build.output),
         "output_dir": str(root / "run"), "max_train_samples": 4, "max_steps": 2,
         "per_device_train_batch_size": 2, "learning_rate": 0.05, "logging_steps": 1,
         "save_strategy": "no", "report_to": "none"}
    )
    run_evaluation(str(base_dir), data=data_id, tasks=["crc", "pcam"], adapter=str(run), output=root / "eval",
                   limit=4, n_resamples=0, batch_size=4, progress=False)
    return {"root": root, "base_dir": base_dir, "base_id": base_id, "data_id": data_id, "run": run,
            "results": root / "eval" / "results.json"}


def test_card_licence_is_the_most_restrictive():
    from pathinsight_models.publish.model_card import combine_licenses

    assert combine_licenses(["apache-2.0", "cc-by-4.0"]) == "cc-by-4.0"
    assert combine_licenses(["cc-by-nc-sa-4.0", "mit"]) == "cc-by-nc-sa-4.0"
    assert combine_licenses(["llama2", "cc-by-4.0"]) == "other"  # unknown terms cannot be ranked


def _inputs(processor) -> dict:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What tissue is shown?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.new("RGB", (40, 36), (200, 80, 150))
    return processor(images=[image], text=prompt, return_tensors="pt")


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs).logits


def _local_logits(env: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
    from peft import PeftModel

    processor = AutoProcessor.from_pretrained(env["run"])
    inputs = _inputs(processor)
    base = AutoModelForImageTextToText.from_pretrained(env["base_dir"])
    base_logits = _logits(base, inputs)
    tuned = PeftModel.from_pretrained(base, str(env["run"]))
    return base_logits, _logits(tuned, inputs), inputs


def _no_token_anywhere(hub: HubServer, repo_id: str) -> None:
    for path, content in hub.files(repo_id).items():
        assert TEST_TOKEN.encode() not in content, path


@pytest.mark.slow
def test_push_adapter_loads_with_from_pretrained(hub: HubServer, env: dict, hub_mark: int):
    repo_id = hub.new_repo_id("llava-pathinsight-lora")
    result = push_model(env["run"], repo_id, results=env["results"], base_model_id=env["base_id"],
                        dataset_id=env["data_id"])
    assert result.weight_type == "Adapter"
    assert len(hub.requests("POST", f"/api/models/{repo_id}/commit/", since=hub_mark)) == 1
    files = hub.files(repo_id)
    assert result.commit.oid == hub.get_repo(repo_id).branches["main"]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "recipe.yaml", "chat_template.jinja",
            ".eval_results/pathenhanceds.yaml"} <= set(files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]  # training_args.bin stays home
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == env["base_id"]
    recipe = yaml.safe_load(files["recipe.yaml"])
    assert recipe["model_name_or_path"] == env["base_id"] and recipe["dataset_name"] == env["data_id"]
    assert "output_dir" not in recipe
    _no_token_anywhere(hub, repo_id)

    # Card: YAML parses, names base, data, library, licence (apache-2.0 + the dataset's "other" -> other).
    card = parse_card_data(files["README.md"])
    assert card["base_model"] == env["base_id"] and card["datasets"] == [env["data_id"]]
    assert card["library_name"] == "peft" and card["pipeline_tag"] == "image-text-to-text"
    assert card["license"] == "other" and card["base_model_relation"] == "adapter"
    text = files["README.md"].decode()
    assert "Not for clinical use" in text and "learning_rate: 0.05" in text
    results = json.loads(env["results"].read_text())
    expected = {(bt.id, round(metric_value(results["tasks"][bt.task], bt.mode, bt.metric), 6))
                for bt in benchmark_tasks() if bt.task in ("crc", "pcam")}
    index = card["model-index"][0]
    assert index["name"] == repo_id
    got = {(m["type"], m["value"]) for r in index["results"] for m in r["metrics"]}
    assert got == expected
    # .eval_results/pathenhanceds.yaml: one entry per headline metric, pointing at the benchmark dataset.
    entries = yaml.safe_load(files[".eval_results/pathenhanceds.yaml"])
    assert {(e["dataset"]["task_id"], e["value"]) for e in entries} == expected
    assert {e["dataset"]["id"] for e in entries} == {env["data_id"]}
    assert all(e["dataset"]["revision"] == hub.get_repo(env["data_id"], "dataset").branches["main"] for e in entries)
    assert "subset" in entries[0]["notes"]  # evaluated with --limit: said so

    # transformers loads base + adapter straight from the adapter repo and reproduces the local model.
    base_logits, local_logits, inputs = _local_logits(env)
    remote = AutoModelForImageTextToText.from_pretrained(repo_id)
    remote_logits = _logits(remote, inputs)
    assert not torch.allclose(base_logits, local_logits, atol=1e-3)  # the adapter matters
    torch.testing.assert_close(remote_logits, local_logits, rtol=0, atol=1e-6)
    assert AutoProcessor.from_pretrained(repo_id).chat_template == AutoProcessor.from_pretrained(env["run"]).chat_template


@pytest.mark.slow
def test_push_merged_replaces_adapter_and_matches_logits(hub: HubServer, env: dict):
    repo_id = hub.new_repo_id("llava-pathinsight-merged")
    push_model(env["run"], repo_id, base_model_id=env["base_id"], dataset_id=env["data_id"])
    result = push_model(env["run"], repo_id, merged=True, base_model_id=env["base_id"], dataset_id=env["data_id"])
    assert result.weight_type == "Merged"
    files = hub.files(repo_id)
    assert "adapter_config.json" not in files and "adapter_model.safetensors" not in files  # stale files deleted
    assert {"config.json", "model.safetensors", "processor_config.json", "README.md"} <= set(files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    card = parse_card_data(files["README.md"])
    assert card["library_name"] == "transformers" and card["base_model"] == env["base_id"]
    assert "model-index" not in card and not [f for f in files if f.startswith(".eval_results/")]  # no --results
    _no_token_anywhere(hub, repo_id)

    _, local_logits, inputs = _local_logits(env)
    remote = AutoModelForImageTextToText.from_pretrained(repo_id)
    torch.testing.assert_close(_logits(remote, inputs), local_logits, rtol=0, atol=1e-4)


def _copy_run(env: dict, tmp_path: Path) -> Path:
    return Path(shutil.copytree(env["run"], tmp_path / "run"))


@pytest.mark.slow
def test_refuses_local_paths_tokens_and_pickles(hub: HubServer, env: dict, tmp_path: Path):
    ids = {"base_model_id": env["base_id"], "dataset_id": env["data_id"]}
    repo_id = hub.new_repo_id("refused")
    # The run was trained from local folders: without Hub ids the card would point at this machine.
    with pytest.raises(InputError, match="local base model"):
        push_model(env["run"], repo_id, dataset_id=env["data_id"])
    with pytest.raises(InputError, match="local dataset"):
        push_model(env["run"], repo_id, base_model_id=env["base_id"])
    with pytest.raises(InputError, match="not a local path"):
        push_model(env["run"], repo_id, base_model_id=str(env["base_dir"]), dataset_id=env["data_id"])

    run = _copy_run(env, tmp_path)
    config = json.loads((run / "tokenizer_config.json").read_text())
    (run / "tokenizer_config.json").write_text(json.dumps({**config, "name_or_path": str(env["base_dir"])}))
    with pytest.raises(InputError, match="local absolute path"):
        push_model(run, repo_id, **ids)
    (run / "tokenizer_config.json").write_text(json.dumps({**config, "note": f"token {TEST_TOKEN}"}))
    with pytest.raises(InputError, match="token"):
        push_model(run, repo_id, **ids)
    (run / "tokenizer_config.json").write_text(json.dumps(config))
    (run / "adapter_model.safetensors").rename(run / "adapter_model.bin")
    with pytest.raises(InputError, match="safetensors"):
        push_model(run, repo_id, **ids)
    with pytest.raises(InputError, match="not on the Hub"):
        push_model(env["run"], repo_id, base_model_id="nobody/missing-base", dataset_id=env["data_id"])
    with pytest.raises(KeyError):
        hub.get_repo(repo_id)  # nothing was created for refused pushes


@pytest.mark.slow
def test_cli_push_model(hub: HubServer, env: dict, capsys: pytest.CaptureFixture[str]):
    repo_id = hub.new_repo_id("cli-model")
    code = main(["push", "model", str(env["run"]), "--repo-id", repo_id, "--results", str(env["results"]),
                 "--base-model-id", env["base_id"], "--dataset-id", env["data_id"]])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert repo_id in out.out and TEST_TOKEN not in out.out + out.err
    assert ".eval_results/pathenhanceds.yaml" in hub.files(repo_id)
    assert main(["push", "model", str(env["run"]), "--repo-id", repo_id, "--dataset-id", env["data_id"]]) == 2
    assert "--base-model-id" in capsys.readouterr().err


@pytest.mark.slow
def test_push_full_finetune(hub: HubServer, env: dict, sample_build, tmp_path: Path):
    from pathinsight_models.training import train

    run = train({"model_name_or_path": str(env["base_dir"]), "dataset_name": str(sample_build.output),
                 "output_dir": str(tmp_path / "full"), "method": "full", "max_train_samples": 2, "max_steps": 1,
                 "per_device_train_batch_size": 2, "learning_rate": 0.01, "save_strategy": "no",
                 "report_to": "none"})
    repo_id = hub.new_repo_id("llava-pathinsight-full")
    with pytest.raises(InputError, match="--merged needs a LoRA run"):
        push_model(run, repo_id, merged=True, base_model_id=env["base_id"], dataset_id=env["data_id"])
    result = push_model(run, repo_id, base_model_id=env["base_id"], dataset_id=env["data_id"])
    assert result.weight_type == "Original"
    files = hub.files(repo_id)
    assert "adapter_config.json" not in files and "model.safetensors" in files
    card = parse_card_data(files["README.md"])
    assert card["library_name"] == "transformers" and card["training"]["method"] == "full"
    processor = AutoProcessor.from_pretrained(run)
    inputs = _inputs(processor)
    local = _logits(AutoModelForImageTextToText.from_pretrained(run), inputs)
    torch.testing.assert_close(_logits(AutoModelForImageTextToText.from_pretrained(repo_id), inputs), local,
                               rtol=0, atol=0)
