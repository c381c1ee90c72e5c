"""The `pathinsight_models` registries: evaluation tasks, model families (+ tiny factories), metric modules.

Each refuses a second object under a taken name, answers an unknown name with an `InputError` that
names the closest match, and lists its names; the default task list has one definition that every
entry point (CLI, leaderboard worker, runner) shows.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from pathenhanceds.errors import InputError
from pathinsight_models.cli import build_parser
from pathinsight_models.evaluation.tasks import (
    TASKS,
    default_tasks,
    get_task,
    list_tasks,
    register_task,
)
from pathinsight_models.families import FAMILIES, get_family, list_families, tiny_families
from pathinsight_models.metrics import METRICS, list_metrics, metric_module, metric_path

ROOT = Path(__file__).resolve().parents[1]


def test_tasks_registry_refuses_duplicates_and_names_the_closest():
    crc = get_task("crc")
    assert register_task(crc) is crc  # the very same object again (a module imported twice) is fine
    with pytest.raises(ValueError, match="registered twice"):
        register_task(dataclasses.replace(crc, description="another crc"))
    assert get_task("crc") is crc
    with pytest.raises(InputError, match="unknown evaluation task 'pcma' \\(did you mean 'pcam'\\?\\)") as err:
        get_task("pcma")
    assert "crc" in err.value.fix and "conversation" in err.value.fix
    assert set(list_tasks()) == set(TASKS.names()) >= {"crc", "pcam", "captioning", "pathvqa", "pathmmu",
                                                         "conversation"}


def test_every_task_module_registers_one_consistent_task():
    for name in list_tasks():
        task = get_task(name)
        module = importlib.import_module(f"pathinsight_models.evaluation.tasks.{name}")
        assert module.TASK is task and task.name == name
        assert {mode for mode, _, _ in task.headline} <= set(task.modes)
        assert (task.rows is None) == (task.config is None)
        for metric in task.metric_modules:
            assert metric in METRICS
    assert default_tasks() == ["crc", "pcam", "captioning", "pathvqa"]
    assert all(get_task(t).rows is not None for t in default_tasks())  # defaults read the benchmark dataset


def test_default_task_list_is_the_same_everywhere(capsys):
    defaults = default_tasks()
    assert build_parser(["eval"]).parse_args(["eval"]).tasks == defaults
    lb = build_parser(["leaderboard"]).parse_args(["leaderboard", "run-pending", "--leaderboard", "org/lb"])
    assert lb.tasks == defaults
    with pytest.raises(SystemExit):
        build_parser(["eval"]).parse_args(["eval", "--help"])
    assert f"(default {','.join(defaults)})" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        build_parser(["leaderboard"]).parse_args(["leaderboard", "run-pending", "--help"])
    assert f"(default {','.join(defaults)})" in " ".join(capsys.readouterr().out.split())

    spec = importlib.util.spec_from_file_location("worker", ROOT / "hub_scripts" / "worker.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    with pytest.raises(SystemExit):
        worker.main(["--help"])
    assert f"(default {','.join(defaults)})" in " ".join(capsys.readouterr().out.split())

    import inspect

    from pathinsight_models.evaluation.runner import run_evaluation
    from pathinsight_models.leaderboard.runner import evaluate_request, run_pending

    # None means "the registry's defaults"; nobody keeps a copy of the list.
    for func in (run_evaluation, run_pending, evaluate_request):
        assert inspect.signature(func).parameters["tasks"].default is None


def test_families_registry_and_tiny_factories():
    llava = get_family("llava")
    with pytest.raises(ValueError, match="registered twice"):
        FAMILIES.register("llava", dataclasses.replace(llava, notes="a second llava"))
    with pytest.raises(InputError, match="did you mean 'qwen2_5_vl'"):
        get_family("qwen25_vl")
    assert list_families() == sorted(list_families()) and "gemma3" in list_families()
    assert set(tiny_families()) == {"llava", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm"}
    assert all(callable(get_family(name).tiny) for name in tiny_families())
    from pathinsight_models.tiny import build_tiny_model

    with pytest.raises(InputError, match="no tiny factory for family 'gemma3'"):
        build_tiny_model("gemma3")


def test_metrics_registry():
    assert list_metrics() == ["bleu1", "classification", "pathvqa", "rouge", "token_f1"]
    for name in list_metrics():
        module = metric_module(name)
        assert module.VERSION and Path(metric_path(name), f"{name}.py").is_file()
    with pytest.raises(InputError, match="did you mean 'rouge'"):
        metric_path("rogue")
    with pytest.raises(ValueError, match="registered twice"):
        METRICS.register("rouge", "somewhere.else")
