"""`pathinsight demo` end to end with a handful of training steps (the real demo trains 500)."""

from __future__ import annotations

import json

import pytest
import yaml

from pathinsight_models.cli import main


@pytest.mark.slow
def test_demo_pipeline_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--output", str(out), "--max-steps", "2", "--eval-limit", "6"])
    summary = json.loads((out / "summary.json").read_text())
    assert code == (0 if summary["goal_met"] else 1)
    assert not summary["goal_met"]  # two steps cannot learn nine classes: the exit code says so
    for path in ("raw/pcam/SYNTHETIC.md", "pathenhanceds/manifest.json", "models/base/config.json",
                 "runs/tuned/model.safetensors", "eval/base/results.json", "eval/tuned/results.json",
                 "compare/compare.md", "compare/compare.png", "push/model/README.md",
                 "push/model/model.safetensors", "README.md"):
        assert (out / path).is_file(), path
    card = (out / "push" / "model" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "pathinsight-demo/tiny-llava-random"
    assert meta["datasets"] == ["pathinsight-demo/PathEnhanceDS-synthetic"] and "model-index" in meta
    assert str(tmp_path) not in card
    assert isinstance(summary["answer"], str) and summary["reference"]
    printed = capsys.readouterr().out
    assert "CRC macro-F1: base" in printed and "NOT met" in printed
    assert "| base (random init) |" in (out / "compare" / "compare.md").read_text()
