"""Leaderboard flow on the loopback Hub: eval.yaml, submit -> run-pending -> results -> the Space's table.

Models are real: a tiny random LLaVA base (published with a licence) and a LoRA adapter from a real
2-step `pathinsight train` run published with `push_model`. Evaluations are real `pathinsight eval`
runs on the synthetic PathEnhanceDS build published to the test Hub (4 rows per task).
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest
import yaml
from support.hub_fixtures import TEST_TOKEN
from support.hub_server import HubServer, parse_card_data

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # a training run, Hub pushes and real evaluations (10-40 s per test)

from huggingface_hub import HfApi  # noqa: E402

from pathenhanceds.errors import InputError  # noqa: E402
from pathinsight_models.cli import main  # noqa: E402
from pathinsight_models.leaderboard import (  # noqa: E402
    EvalRequest,
    filter_table,
    list_requests,
    list_results,
    run_pending,
    submit,
)
from pathinsight_models.leaderboard.requests import flatten_metrics, requests_repo, results_repo  # noqa: E402
from pathinsight_models.publish import push_dataset  # noqa: E402
from pathinsight_models.publish.eval_results import add_eval_yaml, eval_yaml, eval_yaml_text  # noqa: E402
from pathinsight_models.publish.model import push_model  # noqa: E402
from pathinsight_models.tiny import save_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["crc", "pcam"]
BASE_CARD = "---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: image-text-to-text\n---\n# tiny base\n"


def load_app_module():
    spec = importlib.util.spec_from_file_location("leaderboard_app", ROOT / "hub_scripts" / "leaderboard" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def world(hub: HubServer, sample_build, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from pathinsight_models.training import train

    root = tmp_path_factory.mktemp("leaderboard")
    api = HfApi()
    base_dir = save_tiny_model("llava", root / "base", seed=1)
    (base_dir / "README.md").write_text(BASE_CARD)
    base_id = hub.new_repo_id("tiny-llava")
    api.create_repo(base_id)
    api.upload_folder(repo_id=base_id, folder_path=str(base_dir))
    data_id = hub.new_repo_id("PathEnhanceDS")
    push_dataset(sample_build.output, data_id)
    run = train({"model_name_or_path": str(base_dir), "dataset_name": str(sample_build.output),
                 "output_dir": str(root / "run"), "max_train_samples": 4, "max_steps": 2,
                 "per_device_train_batch_size": 2, "learning_rate": 0.05, "save_strategy": "no",
                 "report_to": "none"})
    adapter_id = hub.new_repo_id("tiny-llava-lora")
    push_model(run, adapter_id, base_model_id=base_id, dataset_id=data_id)
    return {"root": root, "base_dir": base_dir, "base_id": base_id, "data_id": data_id, "adapter_id": adapter_id}


def test_eval_yaml_declares_benchmark_configs(hub: HubServer, world: dict):
    # The Space's copy is the generated one, and every task reads a config the dataset card declares.
    assert (ROOT / "hub_scripts" / "leaderboard" / "eval.yaml").read_text() == eval_yaml_text()
    add_eval_yaml(world["data_id"])
    files = hub.files(world["data_id"], "dataset")
    declared = yaml.safe_load(files["eval.yaml"])
    assert declared == eval_yaml()
    configs = {c["config_name"] for c in parse_card_data(files["README.md"])["configs"]}
    assert {t["config"] for t in declared["tasks"]} <= configs
    assert {"crc_f1", "pcam_accuracy", "pathvqa_closed_accuracy"} <= {t["id"] for t in declared["tasks"]}
    assert len({t["id"] for t in declared["tasks"]}) == len(declared["tasks"])


def test_submit_validates_before_writing(hub: HubServer, world: dict, tmp_path: Path):
    lb = hub.new_repo_id("lb-validate")
    api = HfApi()
    with pytest.raises(InputError, match="not on the Hub"):
        submit("nobody/missing-model", lb)
    # A repo without a card.
    bare = hub.new_repo_id("no-card")
    api.create_repo(bare)
    api.upload_file(path_or_fileobj=(world["base_dir"] / "config.json").read_bytes(), path_in_repo="config.json",
                    repo_id=bare)
    with pytest.raises(InputError, match="no model card"):
        submit(bare, lb)
    # A card without a licence.
    api.upload_file(path_or_fileobj=b"---\nlibrary_name: transformers\n---\n# x\n", path_in_repo="README.md",
                    repo_id=bare)
    with pytest.raises(InputError, match="licence"):
        submit(bare, lb)
    # Pickled weights only.
    api.upload_file(path_or_fileobj=b"---\nlicense: mit\n---\n# x\n", path_in_repo="README.md", repo_id=bare)
    api.upload_file(path_or_fileobj=b"\x80\x04not really a checkpoint", path_in_repo="pytorch_model.bin", repo_id=bare)
    with pytest.raises(InputError, match="safetensors"):
        submit(bare, lb)
    # An adapter whose base model is not on the Hub.
    orphan = hub.new_repo_id("orphan-adapter")
    api.create_repo(orphan)
    adapter_files = hub.files(world["adapter_id"])
    config = json.loads(adapter_files["adapter_config.json"])
    config["base_model_name_or_path"] = "nobody/missing-base"
    for name in ("README.md", "adapter_model.safetensors"):
        api.upload_file(path_or_fileobj=adapter_files[name], path_in_repo=name, repo_id=orphan)
    api.upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="adapter_config.json", repo_id=orphan)
    with pytest.raises(InputError, match="base model nobody/missing-base is not on the Hub"):
        submit(orphan, lb)
    with pytest.raises(KeyError):
        hub.get_repo(requests_repo(lb), "dataset")  # nothing written for refused submissions


def test_submit_run_pending_results_and_table(hub: HubServer, world: dict):
    from pathinsight_models.evaluation.runner import run_evaluation

    lb = hub.new_repo_id("lb")
    adapter_sha = hub.get_repo(world["adapter_id"]).branches["main"]
    request = submit(world["adapter_id"], lb)
    assert (request.weight_type, request.base_model, request.revision) == ("Adapter", world["base_id"], adapter_sha)
    assert request.status == "PENDING" and request.license == "other" and request.method == "lora"
    stored = json.loads(hub.files(requests_repo(lb), "dataset")[request.path])
    assert stored["model"] == world["adapter_id"] and stored["status"] == "PENDING"
    assert {"model", "base_model", "revision", "precision", "weight_type", "status", "submitted_time"} <= set(stored)
    with pytest.raises(InputError, match="already submitted"):
        submit(world["adapter_id"], lb)
    base_request = submit(world["base_id"], lb)
    assert base_request.weight_type == "Original" and base_request.base_model is None
    # A third model that disappears before the worker gets to it: its request must end FAILED.
    doomed = hub.new_repo_id("doomed")
    HfApi().create_repo(doomed)
    HfApi().upload_folder(repo_id=doomed, folder_path=str(world["base_dir"]))
    submit(doomed, lb)
    HfApi().delete_repo(doomed)

    done = run_pending(lb, data=world["data_id"], tasks=TASKS, limit=4, n_resamples=0, batch_size=4, progress=False)
    assert [r.status for r in done] == ["FINISHED", "FINISHED", "FAILED"]
    final = {r.model: r for r in list_requests(lb)}
    assert final[doomed].status == "FAILED" and final[doomed].error and TEST_TOKEN not in final[doomed].error
    assert final[world["adapter_id"]].status == "FINISHED" and final[world["adapter_id"]].results_file

    records = {r["config"]["model_name"]: r for r in list_results(lb)}
    assert set(records) == {world["adapter_id"], world["base_id"]}
    record = records[world["adapter_id"]]
    assert record["_path"] == final[world["adapter_id"]].results_file
    config = record["config"]
    assert config["model_sha"] == adapter_sha and config["weight_type"] == "Adapter"
    assert config["base_model"] == world["base_id"] and config["dataset"] == world["data_id"]
    assert config["dataset_sha"] == hub.get_repo(world["data_id"], "dataset").branches["main"]
    assert config["limit"] == 4 and config["tasks"] == TASKS
    # The worker's numbers are those of evaluating the same Hub repo directly.
    direct = run_evaluation(world["adapter_id"], data=world["data_id"], tasks=TASKS, limit=4, n_resamples=0,
                            batch_size=4, output=world["root"] / "direct", progress=False)
    assert record["results"] == flatten_metrics(direct)
    assert set(record["results"]["crc"]) >= {"f1", "recall", "accuracy"}

    for repo in (requests_repo(lb), results_repo(lb)):
        for path, content in hub.files(repo, "dataset").items():
            assert TEST_TOKEN.encode() not in content, path

    # The Space's table (read through huggingface_hub) lists both models with their scores in percent.
    app = load_app_module()
    table = app.load_results_table(lb)
    assert set(table["Model"]) == {world["adapter_id"], world["base_id"]}
    row = table.set_index("Model").loc[world["adapter_id"]]
    assert row["Type"] == "Adapter" and row["Base model"] == world["base_id"] and row["Method"] == "lora"
    assert row["CRC F1"] == pytest.approx(round(100 * record["results"]["crc"]["f1"], 2))
    assert row["PCam acc"] == pytest.approx(round(100 * record["results"]["pcam"]["accuracy"], 2))
    assert row["Average"] == pytest.approx(round((row["CRC F1"] + row["CRC recall"] + row["PCam acc"]) / 3, 2))
    only_pcam = filter_table(table, tasks=["pcam"], base_models=[world["base_id"]])
    assert list(only_pcam["Model"]) == [world["adapter_id"]] and "CRC F1" not in only_pcam.columns
    assert only_pcam["Average"].tolist() == only_pcam["PCam acc"].tolist()
    shown = filter_table(table, drop_empty=True)  # what the Space displays: no all-empty score columns
    assert {"CRC F1", "PCam acc"} <= set(shown.columns) and "Bladder BLEU-1" not in shown.columns
    assert filter_table(table, query="LORA")["Model"].tolist() == [world["adapter_id"]]
    assert filter_table(table, types=["Original"])["Model"].tolist() == [world["base_id"]]
    queue = app.load_requests_table(lb)
    assert sorted(queue["Status"]) == ["FAILED", "FINISHED", "FINISHED"]
    assert EvalRequest.from_dict(final[doomed].to_dict()) == final[doomed]  # JSON round trip


def test_cli_submit_and_run_pending(hub: HubServer, world: dict, capsys: pytest.CaptureFixture[str]):
    lb = hub.new_repo_id("lb-cli")
    assert main(["submit", "--model", world["base_id"], "--leaderboard", lb]) == 0
    assert "PENDING" in capsys.readouterr().out
    assert main(["submit", "--model", world["base_id"], "--leaderboard", lb]) == 2
    assert "already submitted" in capsys.readouterr().err
    assert main(["leaderboard", "run-pending", "--leaderboard", lb, "--data", world["data_id"], "--tasks", "pcam",
                 "--limit", "2", "--bootstrap", "0"]) == 0
    assert "FINISHED" in capsys.readouterr().out
    assert main(["leaderboard", "results", "--leaderboard", lb]) == 0
    assert world["base_id"] in capsys.readouterr().out
    assert main(["leaderboard", "run-pending", "--leaderboard", lb, "--data", str(world["root"])]) == 2
    assert "Hub dataset" in capsys.readouterr().err


def test_hub_scripts_push_dataset_and_space(hub: HubServer, sample_build):
    spec = importlib.util.spec_from_file_location("hub_push", ROOT / "hub_scripts" / "push.py")
    push = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(push)
    data_id = hub.new_repo_id("PathEnhanceDS")
    assert push.main(["dataset", str(sample_build.output), "--repo-id", data_id]) == 0
    assert yaml.safe_load(hub.files(data_id, "dataset")["eval.yaml"]) == eval_yaml()

    before = {p.name for p in ROOT.iterdir()}
    space_id = hub.new_repo_id("lb-space")
    assert push.main(["space", "--kind", "leaderboard", "--repo-id", space_id]) == 0
    new = {p.name for p in ROOT.iterdir()} - before
    assert not new & {"build", "dist", "pathinsight.egg-info"}  # the wheel is built from a copy of the tree
    files = hub.files(space_id, "space")
    wheels = [f for f in files if f.endswith(".whl")]
    assert len(wheels) == 1 and wheels[0].startswith("pathinsight-")
    assert {"app.py", "README.md", "eval.yaml", "requirements.txt"} <= set(files)
    requirements = files["requirements.txt"].decode().splitlines()
    assert f"./{wheels[0]}" in requirements and "gradio>=6,<7" in requirements
    assert parse_card_data(files["README.md"])["sdk"] == "gradio"
    import zipfile

    with zipfile.ZipFile(io.BytesIO(files[wheels[0]])) as wheel:
        names = wheel.namelist()
    assert "pathinsight_models/leaderboard/submission.py" in names and "pathenhanceds/schema.py" in names
