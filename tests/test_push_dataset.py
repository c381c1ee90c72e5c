"""`push_dataset` / `pathinsight push dataset` against the loopback Hub, on a real (synthetic) build."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from support.hub_server import HubServer, parse_card_data

datasets = pytest.importorskip("datasets")

from datasets import Image, List, load_dataset  # noqa: E402
from huggingface_hub import HfApi  # noqa: E402

from pathenhanceds import build  # noqa: E402
from pathenhanceds.errors import InputError  # noqa: E402
from pathenhanceds.sample import write_sample  # noqa: E402
from pathinsight_models.cli import main  # noqa: E402
from pathinsight_models.publish import find_local_paths, push_dataset, validate_dataset_folder  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PathEnhanceDS build of the synthetic sample sources (every config, all splits)."""
    root = tmp_path_factory.mktemp("pathenhanceds")
    sources = write_sample(root / "raw", seed=0)
    return build(sources, root / "PathEnhanceDS", seed=0).output


@pytest.fixture
def copy_of(built: Path, tmp_path: Path):
    def make() -> Path:
        return Path(shutil.copytree(built, tmp_path / built.name))

    return make


def _configs(out: Path) -> dict[str, list[str]]:
    card = parse_card_data((out / "README.md").read_bytes())
    return {c["config_name"]: [f["split"] for f in c["data_files"]] for c in card["configs"]}


def _undecoded(ds):
    # Compare image bytes, not PIL objects.
    return ds.cast_column("images", List(Image(decode=False)))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_push_then_load_every_config(hub: HubServer, built: Path, hub_mark: int):
    repo_id = hub.new_repo_id("PathEnhanceDS")
    before = _digests(built)
    commit = push_dataset(built, repo_id)

    # One commit on main, made of exactly the build's files.
    sha = hub.get_repo(repo_id, "dataset").branches["main"]
    assert commit.oid == sha and commit.endswith(f"/datasets/{repo_id}/commit/{sha}")
    assert len(hub.requests("POST", f"/api/datasets/{repo_id}/commit/", since=hub_mark)) == 1
    remote = hub.files(repo_id, "dataset")
    local = {p.relative_to(built).as_posix(): p.read_bytes() for p in built.rglob("*") if p.is_file()}
    assert set(remote) == set(local) | {".gitattributes"}
    assert all(remote[f] == local[f] for f in local if f != "README.md")
    # The card's usage snippet names the repo instead of the local folder.
    assert f'load_dataset("{repo_id}"' in remote["README.md"].decode()
    assert _digests(built) == before  # the build folder is left untouched

    configs = _configs(built)
    assert {"all", "captioning", "classification", "vqa", "conversation"} <= set(configs)
    for name, splits in configs.items():
        local_ds = _undecoded(load_dataset(str(built), name))
        hub_ds = _undecoded(load_dataset(repo_id, name))
        streamed = load_dataset(repo_id, name, streaming=True)
        for split in splits:
            expected = local_ds[split].to_list()
            assert expected, f"{name}/{split} is empty"
            assert hub_ds[split].to_list() == expected
            assert list(_undecoded(streamed[split])) == expected
    # The default config is `all`.
    assert len(load_dataset(repo_id, split="test")) == sum(
        len(load_dataset(str(built), c, split="test")) for c in configs if c != "all" and "test" in configs[c]
    )


def test_token_is_never_written(hub: HubServer, built: Path):
    repo_id = hub.new_repo_id("token-check")
    hf_home = Path(os.environ["HF_HOME"])
    push_dataset(built, repo_id, token=hub.token)
    token = hub.token.encode()
    for path, content in hub.files(repo_id, "dataset").items():
        assert token not in content, path
    for folder in (built, hf_home):
        for path in folder.rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                assert token not in path.read_bytes(), path
    assert not (hf_home / "token").exists()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("README.md", "\nBuilt from /home/alice/raw/pcam on my laptop.\n"),
        ("README.md", "\nSee file:///data/raw/crc for the inputs.\n"),
        ("manifest.json", None),
    ],
)
def test_refuses_local_absolute_paths(hub: HubServer, copy_of, name: str, text: str | None):
    out = copy_of()
    if name == "manifest.json":
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["source_root"] = str(out.parent / "raw" / "pcam")  # an absolute local path
        (out / "manifest.json").write_text(json.dumps(manifest))
    else:
        (out / name).write_text((out / name).read_text() + text)
    start = hub.mark()
    with pytest.raises(InputError, match="local absolute path") as err:
        push_dataset(out, hub.new_repo_id("leaky"))
    assert err.value.file == str(out / name)
    assert hub.requests(since=start) == []  # refused before contacting the Hub


def test_refuses_token_inside_files(hub: HubServer, copy_of):
    out = copy_of()
    (out / "README.md").write_text((out / "README.md").read_text() + f"\ntoken: {hub.token}\n")
    with pytest.raises(InputError, match="contains your Hugging Face token") as err:
        push_dataset(out, hub.new_repo_id("token-in-card"), token=hub.token)
    assert hub.token not in str(err.value)


def test_find_local_paths():
    text = (
        "see https://huggingface.co/home/x and data/*/train-*.parquet, ./tmp/x, ~/data/y, and/or /api/models;"
        " but /home/bob/raw/x.tif and (C:\\Users\\bob\\raw) and /work/ds/out"
    )
    assert find_local_paths(text, extra=["/work/ds"]) == [
        "/home/bob/raw/x.tif",
        "/work/ds",
        "/work/ds/out",
        "C:\\Users\\bob\\raw",
    ]
    assert find_local_paths("load_dataset('org/PathEnhanceDS', 'all')") == []


def _drop_default(out: Path) -> None:
    (out / "README.md").write_text((out / "README.md").read_text().replace("  default: true\n", "", 1))


def _stray_file(out: Path) -> None:
    (out / "notes.txt").write_text("x")


def _orphan_shard(out: Path) -> None:
    shutil.copy(
        next((out / "data" / "vqa").glob("*.parquet")), out / "data" / "vqa" / "extra-00000-of-00001.parquet"
    )


def _missing_shard(out: Path) -> None:
    next((out / "data" / "vqa").glob("test-*.parquet")).unlink()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda out: (out / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda out: (out / "README.md").write_text("# no metadata\n"), "no YAML metadata"),
        (_drop_default, "default config must be 'all'"),
        (_stray_file, "unexpected file"),
        (_orphan_shard, "not part of any config"),
        (_missing_shard, "no parquet file matches"),
    ],
)
def test_validation_errors(copy_of, mutate, message: str):
    out = copy_of()
    validate_dataset_folder(out)  # the untouched copy is valid
    mutate(out)
    with pytest.raises(InputError, match=message):
        validate_dataset_folder(out)


def test_revision_branch_and_stale_shards(hub: HubServer, built: Path):
    api = HfApi()
    repo_id = hub.new_repo_id("branches")
    commit = push_dataset(built, repo_id, revision="build-2")
    repo = hub.get_repo(repo_id, "dataset")
    assert repo.branches["build-2"] == commit.oid
    assert list(hub.files(repo_id, "dataset", "main")) == [".gitattributes"]

    # A shard left over from an earlier, bigger build would be globbed into the configs: it goes,
    # in the same single commit as the new upload.
    stale = "data/vqa/train-00001-of-00002.parquet"
    api.upload_file(path_or_fileobj=b"PAR1 stale", path_in_repo=stale, repo_id=repo_id, repo_type="dataset")
    start = hub.mark()
    push_dataset(built, repo_id)
    assert stale not in hub.files(repo_id, "dataset")
    assert len(hub.requests("POST", "/commit/", since=start)) == 1
    assert len(load_dataset(repo_id, "vqa", split="train")) == len(
        load_dataset(str(built), "vqa", split="train")
    )


def test_cli_push_dataset(hub: HubServer, built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    repo_id = hub.new_repo_id("cli")
    assert main(["push", "dataset", str(built), "--repo-id", repo_id]) == 0
    assert not hub.get_repo(repo_id, "dataset").private
    sha = hub.get_repo(repo_id, "dataset").branches["main"]
    assert sha in capsys.readouterr().out
    # Pushing the same build again changes nothing but the visibility asked for: no new commit.
    assert main(["push", "dataset", str(built), "--repo-id", repo_id, "--private"]) == 0
    assert hub.get_repo(repo_id, "dataset").private
    assert hub.get_repo(repo_id, "dataset").branches["main"] == sha
    assert sha in capsys.readouterr().out
    # Bad input exits with 2 and an actionable message.
    assert main(["push", "dataset", str(tmp_path / "nope"), "--repo-id", repo_id]) == 2
    assert "dataset folder does not exist" in capsys.readouterr().err
    assert main(["push", "dataset", str(built), "--repo-id", "not-a-repo-id"]) == 2


def test_rejected_token_is_an_input_error(hub: HubServer, built: Path):
    wrong = "hf_not_accepted_by_the_test_hub"
    with pytest.raises(InputError, match=r"refused the request \(401\)") as err:
        push_dataset(built, hub.new_repo_id("wrong-token"), token=wrong)
    assert wrong not in str(err.value)
