"""The loopback Hub against the real clients: huggingface_hub, datasets, transformers, peft."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.hub_fixtures import TEST_TOKEN, blocked_network_attempts
from support.hub_server import HubServer, git_blob_oid, parse_card_data

datasets = pytest.importorskip("datasets")
torch = pytest.importorskip("torch")

from huggingface_hub import (  # noqa: E402 - after the plugin set HF_ENDPOINT (it also is imported first)
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    constants,
    get_session,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


@pytest.fixture(autouse=True)
def _no_server_errors(hub: HubServer):
    start = hub.mark()
    yield
    errors = [(r.method, r.path, r.status) for r in hub.requests(since=start) if r.status >= 500]
    assert not errors, f"test hub answered 5xx: {errors}"


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


# ------------------------------------------------------------------------------------------------ plumbing


def test_clients_point_at_the_loopback_hub(hub: HubServer):
    assert hub.url.startswith("http://127.0.0.1:")
    assert constants.ENDPOINT == hub.url == os.environ["HF_ENDPOINT"]
    assert constants.HF_HUB_DISABLE_XET
    assert constants.HF_HOME == os.environ["HF_HOME"] and "pathinsight-test-hf-home" in constants.HF_HOME
    assert datasets.config.HF_ENDPOINT == hub.url
    assert str(datasets.config.HF_DATASETS_CACHE).startswith(constants.HF_HOME)
    assert not datasets.config.HF_UPDATE_DOWNLOAD_COUNTS  # would HEAD an S3 bucket on every load
    assert HfApi().whoami()["name"] == hub.user


def test_subprocesses_inherit_the_hub_and_early_imports_are_refused(hub: HubServer):
    import subprocess
    import sys

    whoami = "from huggingface_hub import HfApi; print(HfApi().whoami()['name'])"
    out = subprocess.run([sys.executable, "-c", whoami], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == hub.user

    tests_dir = str(Path(__file__).parent)
    early = f"import sys, huggingface_hub; sys.path.insert(0, {tests_dir!r}); import support.hub_fixtures"
    out = subprocess.run([sys.executable, "-c", early], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "must be loaded before huggingface_hub" in out.stderr


def test_socket_guard_blocks_non_loopback():
    import socket

    before = len(blocked_network_attempts())
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("huggingface.co", 443)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("10.255.255.1", 80), timeout=0.1)
    assert len(blocked_network_attempts()) == before + 2


# ------------------------------------------------------------------------------------------------ huggingface_hub


def test_create_upload_list_download(hub: HubServer, tmp_path: Path, hub_mark: int):
    api = HfApi()
    repo_id = hub.new_repo_id("roundtrip")
    url = api.create_repo(repo_id)
    assert url == f"{hub.url}/{repo_id}"
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(repo_id)
    assert err.value.response.status_code == 409
    api.create_repo(repo_id, exist_ok=True)

    weights = os.urandom(3000)  # binary => LFS through the batch API
    files = {
        "config.json": b'{"a": 1}\n',
        "weights/model.bin": weights,
        "notes/readme.txt": b"hello",
        "notes/ünï côde.txt": b"quoted path",
    }
    _write(tmp_path, files)
    info = api.upload_folder(folder_path=tmp_path, repo_id=repo_id, commit_message="add files")
    assert info.oid == hub.get_repo(repo_id).branches["main"]
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", *sorted(files)]
    assert hub.files(repo_id) == {**files, ".gitattributes": hub.files(repo_id)[".gitattributes"]}

    # One commit; the binary went through LFS (batch + upload), the text inline.
    commits = hub.requests("POST", f"/api/models/{repo_id}/commit/main", since=hub_mark)
    assert len(commits) == 1 and commits[0].authenticated
    assert len(hub.requests("POST", f"/{repo_id}.git/info/lfs/objects/batch", since=hub_mark)) == 1
    assert len(hub.requests("PUT", "/__lfs/upload/", since=hub_mark)) == 1
    assert hub.get_repo(repo_id).commits[info.oid].files["weights/model.bin"].is_lfs
    assert not hub.get_repo(repo_id).commits[info.oid].files["config.json"].is_lfs

    path = hf_hub_download(repo_id, "weights/model.bin")
    assert Path(path).read_bytes() == weights
    assert (
        Path(hf_hub_download(repo_id, "config.json", revision=info.oid)).read_bytes() == files["config.json"]
    )
    tree = {f.path: f for f in api.list_repo_tree(repo_id, recursive=True)}
    assert tree["weights/model.bin"].lfs.size == len(weights) and tree["config.json"].blob_id == git_blob_oid(
        files["config.json"]
    )
    snap = Path(snapshot_download(repo_id))
    assert (snap / "notes/readme.txt").read_bytes() == b"hello"
    assert (snap / "notes/ünï côde.txt").read_bytes() == b"quoted path"

    # Re-uploading the same folder is a no-op the client detects through preupload's oids.
    before = hub.mark()
    api.upload_folder(folder_path=tmp_path, repo_id=repo_id)
    assert not hub.requests("POST", "/commit/", since=before)
    assert not hub.requests("PUT", since=before)


def test_errors_and_auth(hub: HubServer, tmp_path: Path):
    api = HfApi()
    repo_id = hub.new_repo_id("errors")
    api.create_repo(repo_id)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.json")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "dönnées/ä b.json")
    missing = hub.requests("HEAD", f"/{repo_id}/resolve/main/missing.json")[-1]
    assert missing.status == 404
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub.new_repo_id("never-created"), "config.json")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("no-namespace-model")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="no-such-branch")

    # Writes need a token; a wrong token is rejected even for reads.
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token=False).create_repo(hub.new_repo_id("anonymous"))
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong").model_info(repo_id)
    assert err.value.response.status_code == 401
    assert not any(TEST_TOKEN in r.path or TEST_TOKEN in json.dumps(r.query) for r in hub.log)

    # Private repos look missing without credentials.
    private = hub.new_repo_id("private")
    api.create_repo(private, private=True)
    assert api.model_info(private).private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(private)

    # The Hub validates card metadata before uploading anything.
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: a\n  default: true\n- config_name: b\n  default: true\n---\n"
    )
    card_repo = hub.new_repo_id("bad-card")
    api.create_repo(card_repo, repo_type="dataset")
    before = hub.mark()
    with pytest.raises(ValueError, match="more than one config"):
        api.upload_folder(folder_path=tmp_path, repo_id=card_repo, repo_type="dataset")
    assert [r.path for r in hub.requests(since=before)] == ["/api/validate-yaml"]

    api.delete_repo(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id)
    api.delete_repo(repo_id, missing_ok=True)


def test_history_branches_deletes_and_parent_check(hub: HubServer):
    api = HfApi()
    repo_id = hub.new_repo_id("history", namespace=hub.user)
    api.create_repo(repo_id.split("/")[1])  # no namespace: goes to the token's user
    first = api.create_commit(
        repo_id,
        [
            CommitOperationAdd("a/x.txt", b"x"),
            CommitOperationAdd("a/y.txt", b"y"),
            CommitOperationAdd("b.txt", b"b"),
        ],
        commit_message="first",
    )
    api.create_branch(repo_id, branch="dev")
    api.create_commit(
        repo_id, [CommitOperationAdd("dev.txt", b"dev")], commit_message="on dev", revision="dev"
    )
    second = api.create_commit(repo_id, [CommitOperationDelete("a/")], commit_message="drop folder a")

    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "b.txt"]
    assert "dev.txt" in api.list_repo_files(repo_id, revision="dev")
    assert sorted(api.list_repo_files(repo_id, revision=first.oid)) == [
        ".gitattributes",
        "a/x.txt",
        "a/y.txt",
        "b.txt",
    ]
    assert [c.title for c in api.list_repo_commits(repo_id)] == ["drop folder a", "first", "initial commit"]
    refs = api.list_repo_refs(repo_id)
    assert {b.name: b.target_commit for b in refs.branches}["main"] == second.oid
    api.delete_branch(repo_id, branch="dev")
    assert [b.name for b in api.list_repo_refs(repo_id).branches] == ["main"]
    assert [c.oid for c in hub.commits(repo_id)][:2] == [second.oid, first.oid]
    api.create_tag(repo_id, tag="v1", revision=first.oid)
    assert Path(hf_hub_download(repo_id, "a/x.txt", revision="v1")).read_bytes() == b"x"

    with pytest.raises(HfHubHTTPError) as err:  # stale parent commit
        api.create_commit(
            repo_id, [CommitOperationAdd("c.txt", b"c")], commit_message="c", parent_commit=first.oid
        )
    assert err.value.response.status_code == 412
    with pytest.raises(EntryNotFoundError):
        api.create_commit(repo_id, [CommitOperationDelete("nope.txt")], commit_message="delete missing")
    with pytest.raises(RevisionNotFoundError):
        api.create_commit(
            repo_id, [CommitOperationAdd("c.txt", b"c")], commit_message="c", revision="no-branch"
        )


def test_tree_pagination_paths_info_and_ranges(hub: HubServer, monkeypatch: pytest.MonkeyPatch):
    api = HfApi()
    repo_id = hub.new_repo_id("tree")
    api.create_repo(repo_id, repo_type="dataset")
    payload = bytes(range(256)) * 4
    ops = [CommitOperationAdd(f"data/part-{i:02d}.bin", payload + bytes([i])) for i in range(7)]
    api.create_commit(
        repo_id,
        [*ops, CommitOperationAdd("README.md", b"---\nlicense: mit\n---\n# t\n")],
        commit_message="add",
        repo_type="dataset",
    )

    monkeypatch.setattr(hub, "tree_page_size", 3)
    before = hub.mark()
    listed = [e.path for e in api.list_repo_tree(repo_id, "data", repo_type="dataset")]
    assert listed == [f"data/part-{i:02d}.bin" for i in range(7)]
    pages = hub.requests("GET", f"/api/datasets/{repo_id}/tree/main/data", since=before)
    assert len(pages) == 3 and "cursor" in pages[1].query

    infos = api.get_paths_info(repo_id, ["data", "README.md", "absent"], repo_type="dataset", expand=True)
    assert [type(i).__name__ for i in infos] == ["RepoFolder", "RepoFile"]
    assert infos[1].last_commit.title == "add"

    url = hf_hub_url(repo_id, "data/part-03.bin", repo_type="dataset")
    headers = {"Authorization": f"Bearer {hub.token}"}
    part = get_session().get(url, headers={**headers, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == (payload + b"\x03")[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(payload) + 1}"
    assert get_session().get(url, headers={**headers, "Range": "bytes=-1"}).content == b"\x03"
    assert get_session().get(url, headers={**headers, "Range": "bytes=99999-"}).status_code == 416
    head = get_session().head(url, headers=headers)
    assert head.headers["X-Linked-Size"] == str(len(payload) + 1) and head.headers["X-Repo-Commit"]

    # HfFileSystem (what `datasets` uses for globbing and streaming) over the same endpoints.
    fs = HfFileSystem()
    assert len(fs.glob(f"datasets/{repo_id}/data/part-*.bin")) == 7
    with fs.open(f"datasets/{repo_id}/data/part-05.bin", "rb", block_size=64) as f:
        f.seek(1024)
        assert f.read(1) == b"\x05"


def test_parse_card_data():
    assert parse_card_data(b"---\nlicense: mit\ntags: [a]\n---\n# Title\n") == {
        "license": "mit",
        "tags": ["a"],
    }
    assert parse_card_data(b"# no metadata\n") is None


# ------------------------------------------------------------------------------------------------ datasets


def _rows(n: int, offset: int = 0) -> list[dict]:
    return [{"idx": offset + i, "text": f"row {offset + i}", "score": (offset + i) / 10} for i in range(n)]


def _dataset_card(configs: dict[str, list[str]], default: str) -> str:
    lines = ["---", "license: cc-by-4.0", "configs:"]
    for name, splits in configs.items():
        lines.append(f"- config_name: {name}")
        if name == default:
            lines.append("  default: true")
        lines.append("  data_files:")
        for split in splits:
            lines += [f"  - split: {split}", f"    path: data/{name}/{split}-*.parquet"]
    return "\n".join([*lines, "---", "", "# Test dataset", ""])


def test_dataset_repo_load_and_stream(hub: HubServer, tmp_path: Path, hub_mark: int):
    configs = {"small": ["train", "test"], "all": ["train", "test"]}
    data = {
        ("small", "train"): _rows(3),
        ("small", "test"): _rows(2, 100),
        ("all", "train"): _rows(5),
        ("all", "test"): _rows(4, 200),
    }
    for (name, split), rows in data.items():
        out = tmp_path / "data" / name / f"{split}-00000-of-00001.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(rows).to_parquet(str(out))
    (tmp_path / "README.md").write_text(_dataset_card(configs, default="all"))

    api = HfApi()
    repo_id = hub.new_repo_id("dataset")
    blocked_before = len(blocked_network_attempts())
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_folder(folder_path=tmp_path, repo_id=repo_id, repo_type="dataset")
    info = api.dataset_info(repo_id)
    assert [c["config_name"] for c in info.card_data["configs"]] == ["small", "all"]

    for name in configs:
        loaded = datasets.load_dataset(repo_id, name)
        for split in configs[name]:
            assert loaded[split].to_list() == data[(name, split)]
        streamed = datasets.load_dataset(repo_id, name, streaming=True)
        for split in configs[name]:
            assert list(streamed[split]) == data[(name, split)]
    default = datasets.load_dataset(repo_id, split="train")
    assert default.to_list() == data[("all", "train")]

    used = hub.requests(since=hub_mark)
    assert any(r.method == "GET" and f"/api/datasets/{repo_id}/tree/" in r.path for r in used)
    assert any(r.status == 206 for r in used)  # streaming reads parquet through HTTP ranges
    assert all(r.status < 400 or r.status == 404 for r in used), [(r.method, r.path, r.status) for r in used]
    # Off loopback, `datasets` only tried the dataset viewer (datasets-server.<endpoint host>): blocked.
    off_loopback = blocked_network_attempts()[blocked_before:]
    assert all("datasets-server.127.0.0.1" in b for b in off_loopback), off_loopback


def test_dataset_push_to_hub_lfs_mode(hub: HubServer, hub_mark: int):
    repo_id = hub.new_repo_id("pushed")
    ds = datasets.Dataset.from_list(_rows(6))
    ds.push_to_hub(repo_id, config_name="numbers", set_default=True)
    assert hub.requests("PUT", "/__lfs/upload/", since=hub_mark)  # parquet went through LFS
    assert datasets.load_dataset(repo_id, "numbers", split="train").to_list() == _rows(6)
    card = parse_card_data(hub.files(repo_id, "dataset")["README.md"])
    assert card["configs"][0]["config_name"] == "numbers" and card["configs"][0]["default"] is True


# ------------------------------------------------------------------------------------------------ transformers / peft


@pytest.fixture(scope="module")
def tiny_llava(hub: HubServer, tmp_path_factory: pytest.TempPathFactory):
    """A tiny random LLaVA (real architecture, see pathinsight_models.tiny) pushed to the test hub."""
    from pathinsight_models.tiny import build_tiny_model

    model, processor = build_tiny_model("llava", seed=0)
    repo_id = hub.new_repo_id("tiny-llava")
    model.push_to_hub(repo_id)
    processor.push_to_hub(repo_id)
    return repo_id, model, processor


def _llava_inputs(processor):
    from PIL import Image

    image = Image.new("RGB", (32, 32), (200, 120, 160))
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}],
        add_generation_prompt=True,
    )
    return processor(images=image, text=text, return_tensors="pt")


def test_model_push_and_from_pretrained(hub: HubServer, tiny_llava):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    repo_id, model, processor = tiny_llava
    start = hub.mark()
    loaded = AutoModelForImageTextToText.from_pretrained(repo_id).eval()
    loaded_processor = AutoProcessor.from_pretrained(repo_id)
    inputs = _llava_inputs(loaded_processor)
    assert inputs["input_ids"].tolist() == _llava_inputs(processor)["input_ids"].tolist()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)

    reads = hub.requests(since=start)
    assert {r.method for r in reads} <= {"GET", "HEAD"}
    # transformers pins the revision with one repo-info call, then resolves every file at that commit.
    assert (reads[0].method, reads[0].path) == ("GET", f"/api/models/{repo_id}")
    sha = hub.get_repo(repo_id).branches["main"]
    assert ("GET", f"/{repo_id}/resolve/{sha}/model.safetensors", 200) in [
        (r.method, r.path, r.status) for r in reads
    ]
    # Optional files the loaders probe for are plain 404 EntryNotFound, never repo-level errors.
    assert all(r.status in (200, 206, 404) for r in reads)


def test_lora_adapter_repo_loads_through_peft_and_transformers(hub: HubServer, tiny_llava, tmp_path: Path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText

    base_repo, base, processor = tiny_llava
    torch.manual_seed(1)
    peft_model = get_peft_model(
        AutoModelForImageTextToText.from_pretrained(base_repo),
        LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)"),
    )
    with torch.no_grad():  # lora_B starts at zero (a no-op adapter): make it matter
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.eval()
    peft_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base_repo
    adapter_repo = hub.new_repo_id("tiny-llava-lora")
    HfApi().create_repo(adapter_repo)
    HfApi().upload_folder(folder_path=tmp_path, repo_id=adapter_repo)

    inputs = _llava_inputs(processor)
    with torch.no_grad():
        expected = peft_model(**inputs).logits
        assert not torch.allclose(expected, base(**inputs).logits)
        via_peft = PeftModel.from_pretrained(
            AutoModelForImageTextToText.from_pretrained(base_repo), adapter_repo
        )
        torch.testing.assert_close(via_peft.eval()(**inputs).logits, expected)
        via_auto = AutoModelForImageTextToText.from_pretrained(adapter_repo).eval()
        torch.testing.assert_close(via_auto(**inputs).logits, expected)
        merged = via_peft.merge_and_unload()
        torch.testing.assert_close(merged(**inputs).logits, expected, rtol=1e-4, atol=1e-5)


def test_causal_lm_adapter_via_auto_model(hub: HubServer, tmp_path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    base = LlamaForCausalLM(config).eval()
    base_repo = hub.new_repo_id("tiny-llama")
    base.push_to_hub(base_repo)
    peft_model = get_peft_model(
        LlamaForCausalLM.from_pretrained(base_repo), LoraConfig(r=2, target_modules=["q_proj"])
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter_repo = hub.new_repo_id("tiny-llama-lora")
    peft_model.push_to_hub(adapter_repo)  # PeftModel.push_to_hub creates the repo and commits once
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        expected = peft_model.eval()(input_ids=ids).logits
        loaded = AutoModelForCausalLM.from_pretrained(adapter_repo).eval()
        torch.testing.assert_close(loaded(input_ids=ids).logits, expected)
    assert "adapter_model.safetensors" in hub.files(adapter_repo)
