"""Mistaken and hostile use of the CLI's outputs and options (issue 10, output/CLI half).

- `--overwrite` replaces only an earlier output of the same command: never the sources, the current
  directory or its parents, the home folder or `/`, nor a non-empty folder without our marker;
- outputs are written beside the target and swapped in; stale temp folders of killed runs are cleaned;
- bad option values and malformed input files are exit 2 with file / line / fix, never a traceback;
  internal errors are one line (traceback only with --debug); SIGINT/SIGTERM exit 130 leaving nothing.

The guard itself is tested directly for `/` and the home folder: the CLI is only ever pointed at tmp folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pathenhanceds.atomic import atomic_output_file, check_output, list_output_kinds
from pathenhanceds.errors import InputError
from pathinsight_models.cli import main, run_command

SMALL = ["--pcam-train-size", "4", "--pcam-validation-size", "2", "--pcam-test-size", "2", "--num-proc", "1"]
CLI = [sys.executable, "-c", "from pathinsight_models.cli import main; raise SystemExit(main())"]


def tree_digest(root: Path) -> str:
    """Names, modes, link targets and bytes of everything under `root` (a byte-for-byte fingerprint)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(root)}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def user_downloads(tmp_path_factory) -> tuple[Path, str]:
    """`pathinsight data sample --output raw`: the user's (synthetic) downloads, and their fingerprint."""
    root = tmp_path_factory.mktemp("user") / "raw"
    assert main(["data", "sample", "--output", str(root)]) == 0
    return root, tree_digest(root)


@pytest.fixture
def raw(user_downloads) -> Path:
    """The downloads; whatever a test does, they stay byte-for-byte the same."""
    root, digest = user_downloads
    yield root
    assert tree_digest(root) == digest


@pytest.fixture
def raw_digest(user_downloads) -> str:
    return user_downloads[1]


def build_argv(raw: Path, out: Path | str, *extra: str) -> list[str]:
    return ["data", "build", "--source", f"pcam={raw / 'pcam'}", "--output", str(out), *SMALL, *extra]


def leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.glob(f".{name}.*"))


# ----------------------------------------------------------------------------------- the two accidents
def test_issue_accident_1_output_is_the_sources_dir(raw, raw_digest, capsys):
    code = main(["data", "build", "--sources-dir", str(raw), "--output", str(raw), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2
    assert "refusing" in err and f"file: {raw}" in err and "fix:" in err
    assert tree_digest(raw) == raw_digest and not leftovers(raw.parent, raw.name)


def test_issue_accident_2_output_is_the_current_directory(raw, tmp_path, monkeypatch, capsys):
    thesis = tmp_path / "thesis"
    (thesis / "chapters").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\chapter{Introduction}\n")
    (thesis / "chapters" / "results.tex").write_text("42\n")
    before = tree_digest(thesis)
    monkeypatch.chdir(thesis)
    code = main(["data", "build", "--sources-dir", os.path.relpath(raw, thesis), "--output", ".", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "the current directory" in err and "fix:" in err
    assert tree_digest(thesis) == before and not leftovers(tmp_path, "thesis")
    # a parent of the current directory, too
    monkeypatch.chdir(thesis / "chapters")
    assert main(["data", "build", "--sources-dir", str(raw), "--output", "..", "--overwrite"]) == 2
    assert "contains the current directory" in capsys.readouterr().err
    assert tree_digest(thesis) == before


@pytest.mark.parametrize(
    ("output", "args", "relation"),
    [
        ("{raw}/pcam", ["--source", "pcam={raw}/pcam"], "is the input"),
        ("{raw}", ["--source", "pcam={raw}/pcam"], "contains the input"),
        ("{raw}/pcam/built", ["--source", "pcam={raw}/pcam"], "lies inside the input"),
        ("{raw}/built", ["--sources-dir", "{raw}"], "lies inside the input"),
        ("{link}", ["--source", "pcam={raw}/pcam"], "contains the input"),  # a symlink to the sources
    ],
)
def test_output_never_is_contains_or_lies_inside_a_source(raw, raw_digest, tmp_path, capsys, output, args, relation):
    link = tmp_path / "link"
    link.symlink_to(raw, target_is_directory=True)
    fmt = {"raw": raw, "link": link}
    argv = ["data", "build", *[a.format(**fmt) for a in args], "--output", output.format(**fmt), "--overwrite", *SMALL]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert relation in err and "fix:" in err
    assert tree_digest(raw) == raw_digest and link.resolve() == raw


@pytest.mark.parametrize("kind", list_output_kinds())
def test_guard_refuses_root_home_and_their_parents(tmp_path, monkeypatch, kind):
    # Only the guard function is pointed at `/` and the home folder: nothing here can delete anything.
    home = tmp_path / "home" / "me"
    home.mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    for target, words in (("/", "the filesystem root"), ("~", "your home folder"), (home, "your home folder"),
                          (home.parent, "contains your home folder")):
        with pytest.raises(InputError, match=words) as err:
            check_output(target, overwrite=True, kind=kind)
        assert err.value.fix and "--output" in err.value.fix
    assert (home / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------- markers and replacing
def test_overwrite_replaces_only_an_earlier_build(raw, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "my_results.csv").write_text("a,b\n1,2\n")
    before = tree_digest(out)
    assert main(build_argv(raw, out)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(build_argv(raw, out, "--overwrite")) == 2  # not ours: refused even with --overwrite
    err = capsys.readouterr().err
    assert "not an earlier `pathinsight data build` output" in err and "delete it yourself" in err
    assert tree_digest(out) == before

    fresh = tmp_path / "fresh"
    assert main(build_argv(raw, fresh)) == 0
    manifest = json.loads((fresh / "manifest.json").read_text())
    assert manifest["generator"] == "pathenhanceds.build"
    (fresh / "extra.txt").write_text("stale")
    assert main(build_argv(raw, fresh, "--overwrite")) == 0  # an earlier build is replaced
    assert not (fresh / "extra.txt").exists() and (fresh / "manifest.json").is_file()
    assert not leftovers(tmp_path, "fresh") and not leftovers(tmp_path, "out")

    # other commands never replace a build (and `data export` never its own input)
    capsys.readouterr()
    assert main(["data", "export", str(fresh), "--format", "llava", "--output", str(fresh), "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
    export = tmp_path / "export"
    assert main(["data", "export", str(fresh), "--format", "llava", "--config", "classification", "--output",
                 str(export)]) == 0
    assert main(["data", "build", "--source", f"pcam={raw / 'pcam'}", "--output", str(export), "--overwrite",
                 *SMALL]) == 2
    assert "not an earlier `pathinsight data build` output" in capsys.readouterr().err
    assert main(["data", "export", str(fresh), "--format", "sharegpt", "--config", "classification", "--output",
                 str(export), "--overwrite"]) == 0  # an earlier export is replaced
    assert json.loads((export / "manifest.json").read_text())["format"] == "sharegpt"


def test_builds_of_earlier_versions_are_recognised(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"name": "PathEnhanceDS", "library_version": "0.0.9",
                                                   "digest": "ab" * 32, "counts": {}}))
    assert check_output(old, overwrite=True, kind="dataset") == old.resolve()
    with pytest.raises(InputError, match="not an earlier"):
        check_output(old, overwrite=True, kind="export")  # a build is not an export
    (old / "manifest.json").write_text('{"name": "PathEnhanceDS", "generator": "someone.else"}')
    with pytest.raises(InputError, match="not an earlier"):
        check_output(old, overwrite=True, kind="dataset")
    (old / "manifest.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(InputError, match="not an earlier"):
        check_output(old, overwrite=True, kind="dataset")


def test_sample_never_writes_over_real_downloads(tmp_path, capsys):
    downloads = tmp_path / "downloads"
    (downloads / "pcam").mkdir(parents=True)
    (downloads / "pcam" / "camelyonpatch_level_2_split_train_x.h5.gz").write_bytes(b"days of downloading")
    before = tree_digest(downloads)
    assert main(["data", "sample", "--output", str(downloads), "--overwrite"]) == 2
    assert "not an earlier `pathinsight data sample` output" in capsys.readouterr().err
    assert tree_digest(downloads) == before


def test_demo_and_push_staging_replace_only_their_own_folders(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("1,2\n")
    for kind in ("demo", "push-stage"):  # both replace an earlier folder of theirs without --overwrite
        with pytest.raises(InputError, match="not an earlier"):
            check_output(mine, overwrite=True, kind=kind)
    from pathenhanceds.atomic import write_marker

    demo = tmp_path / "demo"
    demo.mkdir()
    write_marker(demo, "demo")
    (demo / "half-finished").mkdir()
    assert check_output(demo, overwrite=True, kind="demo") == demo.resolve()
    with pytest.raises(InputError, match="not an earlier"):
        check_output(demo, overwrite=True, kind="push-stage")


def test_output_under_a_regular_file(raw, tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    assert main(build_argv(raw, blocker / "out")) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(build_argv(raw, blocker, "--overwrite")) == 2
    assert "not a folder" in capsys.readouterr().err
    assert blocker.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_output_in_a_read_only_folder(raw, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        undo = ["chmod", "755", str(ro)]
    else:  # root ignores permission bits, not the immutable flag
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode:
            pytest.skip("running as root and this filesystem has no immutable flag (chattr +i) to make a folder read-only")
        undo = ["chattr", "-i", str(ro)]
    try:
        assert main(build_argv(raw, ro / "out")) == 2
        err = capsys.readouterr().err
        assert "cannot write in" in err and f"file: {ro / 'out'}" in err and "fix:" in err
        assert list(ro.iterdir()) == []
    finally:
        subprocess.run(undo, check=True)


def test_umask_is_respected(raw, tmp_path):
    previous = os.umask(0o022)
    try:
        assert main(build_argv(raw, tmp_path / "a")) == 0
        os.umask(0o027)
        assert main(build_argv(raw, tmp_path / "b")) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "a" / "manifest.json").stat().st_mode) == 0o644


# ---------------------------------------------------------------------------------------- stale temps
def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temp_folders_of_a_killed_run_are_cleaned(raw, tmp_path, capsys, caplog):
    pid = _dead_pid()
    stale_tmp = tmp_path / f".out.tmp-{pid}-0123abcd"
    (stale_tmp / "data").mkdir(parents=True)
    (stale_tmp / "data" / "half.parquet").write_bytes(b"PAR1")
    assert main(build_argv(raw, tmp_path / "out")) == 0
    assert f"removed {stale_tmp}, left by an interrupted run (pid {pid})" in caplog.text
    assert not stale_tmp.exists() and not leftovers(tmp_path, "out")

    # killed between the two renames of a swap: the earlier build is put back, then needs --overwrite
    earlier = tmp_path / f".out.old-{_dead_pid()}-89abcdef"
    (tmp_path / "out").rename(earlier)
    assert main(build_argv(raw, tmp_path / "out")) == 2
    assert "already exists" in capsys.readouterr().err and "restored" in caplog.text
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert not earlier.exists()


def test_a_live_run_writing_the_same_output_is_named(raw, tmp_path, capsys):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        busy = tmp_path / f".out.tmp-{sleeper.pid}-0123abcd"
        busy.mkdir()
        assert main(build_argv(raw, tmp_path / "out")) == 2
        err = capsys.readouterr().err
        assert "another run is writing this output" in err and busy.name in err
        assert busy.is_dir() and not (tmp_path / "out").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_failed_overwrite_of_a_file_leaves_the_old_file_and_nothing_else(tmp_path):
    from pathenhanceds.filters.scores_file import ScoreMeta, ScoreRow, ScoreTable, read_scores, write_scores

    table = ScoreTable([ScoreRow("a" * 64, "pcam", "r1", "", 0.99, None)], ScoreMeta("m", ("h&e", "other")))
    scores = write_scores(table, tmp_path / "scores.parquet")
    before = scores.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_output_file(scores, overwrite=True, kind="scores") as tmp:
            tmp.write_bytes(b"half a parquet file")
            raise RuntimeError("disk full")
    assert scores.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]
    notes = tmp_path / "notes.parquet"
    notes.write_bytes(b"not ours")
    with pytest.raises(InputError, match="not written by `pathinsight data score`"):
        write_scores(table, notes, overwrite=True)
    assert notes.read_bytes() == b"not ours"
    write_scores(table, scores, overwrite=True)  # an earlier scores file is replaced
    assert len(read_scores(scores)) == 1 and sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.parquet", "scores.parquet"]


# ------------------------------------------------------------------------------------ option checking
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "build", "--source", "pcam=x", "--output", "o", "--pcam-train-size", "-5"], "must be >= 0"),
        (["data", "build", "--source", "pcam=x", "--output", "o", "--pcam-train-size", "1.5"], "expected an integer"),
        (["data", "build", "--source", "pcam=x", "--output", "o", "--num-proc", "0"], "must be >= 1"),
        (["data", "build", "--source", "pcam=", "--output", "o"], "path of source 'pcam' is empty"),
        (["data", "build", "--source", "=x", "--output", "o"], "source name is empty"),
        (["data", "build", "--source", "pcam=x", "--output", "o", "--near-dup-threshold", "65"], "between 0 and 64"),
        (["data", "build", "--source", "pcam=x", "--output", "o", "--bladder-validation-fraction", "1"], "[0, 1)"),
        (["data", "build", "--source", "pcam=x", "--output", "o", "--openpath-test-fraction", "nan"], "[0, 1)"),
        (["data", "score", "--source", "pcam=x", "--output", "o", "--batch-size", "0"], "must be >= 1"),
        (["data", "score", "--source", "pcam=x", "--output", "o", "--threshold", "1.5"], "[0, 1)"),
        (["eval", "--model", "m", "--output", "o", "--batch-size", "0"], "must be >= 1"),
        (["eval", "--model", "m", "--output", "o", "--limit", "0"], "must be >= 1"),
        (["eval", "--model", "m", "--output", "o", "--bootstrap", "-1"], "must be >= 0"),
        (["eval", "--model", "m", "--output", "o", "--confidence", "1"], "(0, 1)"),
        (["eval", "score", "--task", "crc", "--predictions", "p", "--confidence", "0"], "(0, 1)"),
    ],
)
def test_bad_option_values_are_usage_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- error contract
def test_internal_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    def broken() -> int:
        return {}["counts"]

    monkeypatch.delenv("PATHINSIGHT_DEBUG", raising=False)
    assert run_command(broken) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "internal error (KeyError: 'counts')" in err and "please report" in err and "--debug" in err
    assert run_command(broken, debug=True) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("PATHINSIGHT_DEBUG", "1")
    assert run_command(broken) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.delenv("PATHINSIGHT_DEBUG")

    missing = tmp_path / "missing"
    assert main(["data", "stats", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"file: {missing}" in err and "fix:" in err and "Traceback" not in err
    assert main(["--debug", "data", "stats", str(missing)]) == 2
    assert "Traceback" in capsys.readouterr().err


def _crc_line(i: int, **extra) -> str:
    return json.dumps({"id": f"r{i}", "prediction": "adipose", "reference": "adipose", **extra})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no predictions"),
        (b"\n  \n\n", "no predictions"),
        (f"{_crc_line(1)}\n{{not json\n".encode(), "line 2: not JSON"),
        (f"{_crc_line(1)}\n[1, 2]\n".encode(), "line 2: not a JSON object"),
        (b'{"id": "a", "reference": "adipose"}\n', "line 1: lacks prediction"),
        (b'{"id": "a", "prediction": "x"}\n', "line 1: lacks reference"),
        (b'{"id": "a", "prediction": 5, "reference": "adipose"}\n', '"prediction" must be a string'),
        (b'{"id": ["a"], "prediction": "x", "reference": "adipose"}\n', '"id" must be a string'),
        (b'{"id": "a", "prediction": "x", "reference": null}\n', '"reference" must be a string'),
        (b'{"id": "a", "prediction": "x", "reference": "adipose", "group": {"k": 1}}\n', '"group" must be'),
        (f"{_crc_line(1)}\n{_crc_line(1)}\n".encode(), "line 2: duplicate id 'r1' (first on line 1)"),
        (f"{_crc_line(1)}\n".encode() + b'{"id": "b", "prediction": "\xff\xfe", "reference": "x"}\n',
         "line 2: not valid UTF-8"),
        (b"[" * 100000 + b"\n", "line 1: not JSON"),
    ],
)
def test_eval_score_malformed_predictions(tmp_path, capsys, content, message):
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(content)
    out = tmp_path / "scored"
    assert main(["eval", "score", "--task", "crc", "--predictions", str(preds), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and f"file: {preds}" in err and "fix:" in err and "Traceback" not in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]


def test_eval_score_output_overwrite_rules(tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(_crc_line(i) + "\n" for i in range(4)))
    out = tmp_path / "scored"
    argv = ["eval", "score", "--task", "crc", "--predictions", str(preds), "--output", str(out), "--bootstrap", "0"]
    assert main(argv) == 0
    assert json.loads((out / "results.json").read_text())["generator"] == "pathinsight_models.evaluation"
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "paper.md").write_text("draft")
    assert main([*argv[:-4], "--output", str(mine), "--overwrite", "--bootstrap", "0"]) == 2
    assert (mine / "paper.md").read_text() == "draft" and len(list(mine.iterdir())) == 1
    assert main([*argv[:-4], "--output", str(preds), "--overwrite", "--bootstrap", "0"]) == 2  # its own input
    assert not leftovers(tmp_path, "scored") and not leftovers(tmp_path, "mine")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"model_name_or_path: m\ndataset_name: \xff\xfe\n", "not valid UTF-8 (line 2)"),
        (b"model_name_or_path: m\n  dataset_name: [unclosed\n", "not valid YAML"),
        (b"- a\n- b\n", "must be a YAML mapping"),
        (b"x: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_train_config_bad_yaml(tmp_path, content, message):
    from pathinsight_models.training.recipe import read_recipe_file

    config = tmp_path / "recipe.yaml"
    config.write_bytes(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        read_recipe_file(config)
    assert err.value.file == str(config) and err.value.fix


def test_train_entry_points_share_the_error_contract(tmp_path, capsys):
    from pathinsight_models.cli.train import main as training_main

    config = tmp_path / "recipe.yaml"
    config.write_bytes(b"model_name_or_path: m\n\tdataset_name: d\n")
    for entry in (lambda: main(["train", "--config", str(config)]), lambda: training_main(["--config", str(config)])):
        assert entry() == 2
        err = capsys.readouterr().err
        assert "not valid YAML" in err and "line 2" in err and "Traceback" not in err


def test_push_dataset_folder_with_invalid_utf8(raw, tmp_path):
    from pathinsight_models.publish.dataset import validate_dataset_folder

    out = tmp_path / "built"
    assert main(build_argv(raw, out)) == 0
    card = out / "README.md"
    card.write_bytes(card.read_bytes() + b"\n\xc3\x28 broken\n")
    with pytest.raises(InputError, match="README.md is not valid UTF-8") as err:
        validate_dataset_folder(out)
    assert err.value.file == str(card) and err.value.fix


# ----------------------------------------------------------------------------------------- interrupts
@pytest.fixture(scope="module")
def bigger_raw(tmp_path_factory) -> Path:
    """A sample large enough that the build is still encoding when the signal arrives."""
    from pathenhanceds.sample import SampleSizes, write_sample

    root = tmp_path_factory.mktemp("bigger") / "raw"
    write_sample(root, sizes=SampleSizes(pcam_train=192, crc_val_per_class=24, crc_train_per_class=48))
    return root


def _processes_with(token: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"PATHINSIGHT_TEST_TOKEN={token}".encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def _interrupt_build(raw: Path, tmp_path: Path, sig: signal.Signals, num_proc: int, whole_group: bool):
    token = uuid.uuid4().hex
    scratch = tmp_path / "tmpdir"
    scratch.mkdir(exist_ok=True)
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(scratch), "PATHINSIGHT_TEST_TOKEN": token}
    proc = subprocess.Popen([*CLI, "data", "build", "--sources-dir", str(raw), "--output", str(out), "--num-proc",
                             str(num_proc)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        # Signal once rows are being encoded and written: the temp folder holds data/ (workers busy).
        while proc.poll() is None and not any(t.joinpath("data").exists() for t in tmp_path.glob(".out.tmp-*")):
            time.sleep(0.02)
        assert proc.poll() is None, "the build ended before it could be interrupted"
        assert list(scratch.glob("pcam-*")), "the .h5.gz copies should exist mid-build"
        if whole_group:  # what a terminal's Ctrl-C does: the parent and every worker get SIGINT
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = err.decode()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and "BrokenPipeError" not in err
    assert not out.exists() and not leftovers(tmp_path, "out")
    assert list(scratch.iterdir()) == []  # expanded .h5.gz copies removed
    for _ in range(100):  # workers are terminated by the parent (and die with it)
        if not _processes_with(token):
            break
        time.sleep(0.05)
    assert _processes_with(token) == []


@pytest.mark.slow
def test_sigint_and_sigterm_mid_build_leave_nothing_and_a_rerun_succeeds(bigger_raw, tmp_path):
    before = tree_digest(bigger_raw)
    for sig, num_proc, group in [(signal.SIGINT, 2, True), (signal.SIGTERM, 2, False), (signal.SIGINT, 2, True),
                                 (signal.SIGINT, 1, True), (signal.SIGTERM, 2, True)]:
        _interrupt_build(bigger_raw, tmp_path, sig, num_proc, group)
    proc = subprocess.run([*CLI, "data", "build", "--sources-dir", str(bigger_raw), "--output", str(tmp_path / "out"),
                           "--num-proc", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "manifest.json").is_file() and not leftovers(tmp_path, "out")
    assert tree_digest(bigger_raw) == before


@pytest.mark.slow
def test_pool_shutdown_survives_workers_killed_while_holding_the_task_queue_lock():
    """A group SIGTERM can kill an idle worker that holds the task queue's read lock; CPython's
    `Pool.terminate()` then waits for that lock forever (it hung 1 of 10 interrupted builds)."""
    import multiprocessing as mp
    import threading

    from pathenhanceds import rows

    pool = mp.get_context("fork").Pool(2)
    time.sleep(0.5)  # idle workers: one of them waits for a task holding the read lock
    for proc in list(pool._pool):
        os.kill(proc.pid, signal.SIGKILL)
    done = threading.Thread(target=rows._shutdown, args=(pool,), daemon=True)
    done.start()
    done.join(120)  # a liveness check, not a timing one: without the fix it never returns
    assert not done.is_alive()
    assert all(proc.exitcode is not None for proc in pool._pool)
