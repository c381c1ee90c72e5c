"""Publish PathInsight artefacts to the Hub: a dataset (+ its eval.yaml), a model, or a Space.

    python hub_scripts/push.py dataset OUT --repo-id ORG/PathEnhanceDS
    python hub_scripts/push.py model RUN_DIR --repo-id ORG/NAME [--results results.json] [--merged] ...
    python hub_scripts/push.py space --kind leaderboard --repo-id ORG/LB [--variable LEADERBOARD_ID=ORG/LB]
    python hub_scripts/push.py space --kind demo --repo-id ORG/chat --variable PATHINSIGHT_MODEL=ORG/NAME

The token comes from `hf auth login` or HF_TOKEN. `space` uploads hub_scripts/<kind>/ plus a wheel of
this checkout (built with `pip wheel`), which the Space's requirements.txt installs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPACE_DIRS = {"leaderboard": HERE / "leaderboard", "demo": HERE / "demo_space"}
WHEEL_LINE = re.compile(r"^\./pathinsight-[^\s/]+\.whl$", flags=re.M)


PACKAGE_FILES = ("pyproject.toml", "README.md", "pathenhanceds", "pathinsight_models")


def build_wheel(out_dir: Path) -> Path:
    """A wheel of this checkout (no dependencies bundled), built from a copy so the tree stays clean."""
    source = out_dir / "source"
    for name in PACKAGE_FILES:
        src = HERE.parent / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir), str(source)],
                   check=True)
    return next(out_dir.glob("pathinsight-*.whl"))


def push_space(kind: str, repo_id: str, *, variables: dict[str, str], wheel: Path | None, private: bool) -> str:
    """Upload one Space folder with its variables (and optionally the wheel) in one commit; returns the commit."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    folder = SPACE_DIRS[kind]
    ops = [CommitOperationAdd(p.name, str(p)) for p in sorted(folder.iterdir())
           if p.is_file() and p.name != "requirements.txt" and p.suffix in (".py", ".md", ".yaml")]
    requirements = (folder / "requirements.txt").read_text(encoding="utf-8")
    if wheel is not None:
        requirements = WHEEL_LINE.sub(f"./{wheel.name}", requirements)
        ops.append(CommitOperationAdd(wheel.name, str(wheel)))
    ops.append(CommitOperationAdd("requirements.txt", requirements.encode()))
    commit = api.create_commit(repo_id, ops, repo_type="space", commit_message=f"Deploy the PathInsight {kind} Space")
    for key, value in variables.items():
        api.add_space_variable(repo_id, key, value)
    return str(commit)


def main(argv: list[str] | None = None) -> int:
    """Push a Space (leaderboard or demo) with the library wheel; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("dataset", help="push a PathEnhanceDS build and declare the benchmark (eval.yaml)")
    d.add_argument("out", type=Path)
    d.add_argument("--repo-id", required=True)
    d.add_argument("--private", action="store_true")
    d.add_argument("--no-eval-yaml", action="store_true", help="do not commit eval.yaml")
    m = sub.add_parser("model", help="same as `pathinsight push model`")
    m.add_argument("rest", nargs=argparse.REMAINDER, help="arguments of `pathinsight push model`")
    s = sub.add_parser("space", help="deploy the leaderboard or the chat demo Space")
    s.add_argument("--kind", choices=sorted(SPACE_DIRS), required=True)
    s.add_argument("--repo-id", required=True)
    s.add_argument("--variable", action="append", default=[], metavar="KEY=VALUE", help="Space variable")
    s.add_argument("--wheel", type=Path, help="use this wheel instead of building one")
    s.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)

    from pathenhanceds.errors import InputError

    try:
        if args.what == "dataset":
            from pathinsight_models.publish import push_dataset
            from pathinsight_models.publish.eval_results import add_eval_yaml

            print(push_dataset(args.out, args.repo_id, private=args.private))
            if not args.no_eval_yaml:
                print(add_eval_yaml(args.repo_id))
            return 0
        if args.what == "model":
            from pathinsight_models.cli import main as cli

            return cli(["push", "model", *args.rest])
        variables = dict(v.split("=", 1) for v in args.variable if "=" in v)
        with tempfile.TemporaryDirectory() as tmp:
            wheel = args.wheel or build_wheel(Path(tmp))
            print(push_space(args.kind, args.repo_id, variables=variables, wheel=wheel, private=args.private))
        return 0
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
