"""Publish a built PathEnhanceDS folder to the Hugging Face Hub as a dataset repo, in one commit.

The folder is what `pathenhanceds.build` writes: `README.md` (card with YAML `configs:`, `all` the
default), `data/<config>/<split>-NNNNN-of-NNNNN.parquet` and `manifest.json`. It is checked before
anything is sent: layout, card metadata, every declared data file pattern matching a local shard, no
local absolute path and no token in the card or manifest. The token itself is only handed to
`huggingface_hub` for the HTTP requests; nothing is written to disk.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pathenhanceds.errors import InputError
from pathenhanceds.layout import CARD_FILE, DEFAULT_CONFIG, MANIFEST_FILE, SHARD_RE
from pathinsight_models.hub import check_no_leaks, check_repo_id, home_paths, hub_api


@dataclass(frozen=True)
class DatasetFolder:
    """A validated build folder: what will be pushed."""

    root: Path
    readme: str
    configs: list[dict[str, Any]]
    data_files: list[str]  # repo-relative POSIX paths of the parquet shards
    manifest: dict[str, Any]


def _front_matter(readme: str, path: Path) -> dict[str, Any]:
    match = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n", readme, flags=re.S)
    if match is None:
        raise InputError(
            "README.md has no YAML metadata block",
            file=path,
            fix="rebuild the dataset; the card starts with '---'",
        )
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        raise InputError(f"README.md metadata is not valid YAML: {exc}", file=path) from None
    if not isinstance(data, dict):
        raise InputError("README.md metadata must be a YAML mapping", file=path)
    return data


def _split_patterns(config: dict[str, Any], path: Path) -> dict[str, list[str]]:
    """split -> data_files patterns of one `configs:` entry."""
    name = config.get("config_name")
    files = config.get("data_files")
    entries = files if isinstance(files, list) else [files]
    out: dict[str, list[str]] = {}
    for entry in entries:
        if isinstance(entry, str):
            out.setdefault("train", []).append(entry)
        elif isinstance(entry, dict) and isinstance(entry.get("split"), str) and entry.get("path"):
            paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
            out.setdefault(entry["split"], []).extend(str(p) for p in paths)
        else:
            raise InputError(
                f"config {name!r} has malformed data_files: {entry!r}",
                file=path,
                fix="each data_files item needs 'split' and 'path'",
            )
    if not out:
        raise InputError(f"config {name!r} declares no data_files", file=path)
    return out


def _list_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _read_text(path: Path) -> str:
    """A UTF-8 text file of the dataset folder; bad bytes are an `InputError` naming file and line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path.name} is not valid UTF-8 (line {line})", file=path, record=f"line {line}",
                         fix="rebuild the dataset with `pathinsight data build`, or save the file as UTF-8") from None



def validate_dataset_folder(out_dir: str | os.PathLike[str], token: str | None = None) -> DatasetFolder:
    """Check a build folder before publishing; raise `InputError` saying what is wrong and how to fix it."""
    root = Path(out_dir).expanduser()
    if not root.is_dir():
        raise InputError(
            "dataset folder does not exist",
            file=root,
            fix="pass the --output folder of `pathinsight data build`",
        )
    readme_path, manifest_path = root / CARD_FILE, root / MANIFEST_FILE
    for required in (readme_path, manifest_path):
        if not required.is_file():
            raise InputError(
                f"{required.name} is missing: not a built PathEnhanceDS folder",
                file=required,
                fix="build the dataset with `pathinsight data build` first",
            )
    readme, manifest_text = _read_text(readme_path), _read_text(manifest_path)
    try:
        manifest = json.loads(manifest_text)
    except json.JSONDecodeError as exc:
        raise InputError(f"manifest.json is not valid JSON: {exc}", file=manifest_path) from None
    if not isinstance(manifest, dict):
        raise InputError("manifest.json must hold a JSON object", file=manifest_path)

    # Privacy first: a card or manifest must not leak where the data sat on this machine, nor a token.
    extra = [str(root.resolve()), *home_paths()]
    for path, text in ((readme_path, readme), (manifest_path, manifest_text)):
        check_no_leaks(
            text, name=path.name, file=path, token=token, extra_paths=extra,
            fix="published files must not reveal local paths: rebuild with the current builder (it stores "
            "paths relative to each source) or edit the file",
        )

    card = _front_matter(readme, readme_path)
    configs = card.get("configs")
    if not isinstance(configs, list) or not configs or not all(isinstance(c, dict) for c in configs):
        raise InputError(
            "README.md metadata has no `configs:` list", file=readme_path, fix="rebuild the dataset"
        )
    names = [c.get("config_name") for c in configs]
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"`configs:` names must be unique strings, got {names}", file=readme_path)
    defaults = [c["config_name"] for c in configs if c.get("default")]
    if defaults != [DEFAULT_CONFIG]:
        raise InputError(
            f"the default config must be {DEFAULT_CONFIG!r} (and only it), got {defaults or 'none'}",
            file=readme_path,
            fix=f"mark `{DEFAULT_CONFIG}` with `default: true` in the README `configs:`",
        )

    files = _list_files(root)
    parquet = [f for f in files if f.endswith(".parquet")]
    unexpected = [f for f in files if f not in (CARD_FILE, MANIFEST_FILE) and f not in parquet]
    bad_shards = [f for f in parquet if not SHARD_RE.match(f)]
    if unexpected or bad_shards:
        first = (unexpected or bad_shards)[0]
        raise InputError(
            f"unexpected file in the dataset folder: {first}",
            file=root / first,
            fix="only README.md, manifest.json and data/<config>/<split>-NNNNN-of-NNNNN.parquet are published; "
            "move other files out of the folder",
        )
    covered: set[str] = set()
    for config in configs:
        for split, patterns in _split_patterns(config, readme_path).items():
            matched = [f for f in parquet if any(fnmatch.fnmatchcase(f, p) for p in patterns)]
            if not matched:
                raise InputError(
                    f"config {config['config_name']!r} split {split!r}: no parquet file matches {patterns}",
                    file=readme_path,
                    fix="the card and data/ disagree; rebuild the dataset",
                )
            covered.update(matched)
    orphans = sorted(set(parquet) - covered)
    if orphans:
        raise InputError(
            f"{orphans[0]} is not part of any config in README.md",
            file=root / orphans[0],
            fix="rebuild the dataset",
        )
    listed = manifest.get("files")
    if isinstance(listed, list) and sorted(listed) != parquet:
        missing = sorted(set(listed) - set(parquet)) or sorted(set(parquet) - set(listed))
        raise InputError(
            f"manifest.json and data/ disagree (e.g. {missing[0]})",
            file=manifest_path,
            fix="the folder was modified after the build; rebuild it",
        )
    return DatasetFolder(root, readme, configs, parquet, manifest)


def _hub_readme(folder: DatasetFolder, repo_id: str) -> bytes:
    # The card's usage snippet loads the local folder by name; on the Hub it must name the repo.
    return folder.readme.replace(
        f'load_dataset("{folder.root.resolve().name}"', f'load_dataset("{repo_id}"'
    ).encode()


def push_dataset(
    out_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Validate `out_dir` and upload it to the dataset repo `repo_id` in a single commit.

    Creates the repo if needed (and the branch `revision`), uploads README.md, manifest.json and the
    parquet shards, and deletes shards of an earlier push that the new build no longer has (same
    commit), so the configs' globs never mix two builds. `token` defaults to the logged-in token /
    `HF_TOKEN`. Returns the commit URL (a `huggingface_hub.CommitInfo`; `.oid` is the commit sha).
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, get_token
    from huggingface_hub.errors import HfHubHTTPError

    check_repo_id(repo_id, example="my-lab/PathEnhanceDS")
    token = token or get_token()
    if not token:
        raise InputError(
            "no Hugging Face token found",
            fix="run `hf auth login` or set HF_TOKEN to a token with write access",
        )
    folder = validate_dataset_folder(out_dir, token=token)
    branch = revision or "main"
    api = hub_api(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.repo_info(repo_id, repo_type="dataset")
        if private and not info.private:
            api.update_repo_settings(repo_id, private=True, repo_type="dataset")
        if branch != "main":
            api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
        head = api.repo_info(repo_id, repo_type="dataset", revision=branch)
        remote = [s.rfilename for s in head.siblings or []]
        ops: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd("README.md", _hub_readme(folder, repo_id)),
            CommitOperationAdd("manifest.json", str(folder.root / "manifest.json")),
            *(CommitOperationAdd(rel, str(folder.root / rel)) for rel in folder.data_files),
        ]
        stale = [f for f in remote if f.startswith("data/") and f not in set(folder.data_files)]
        ops += [CommitOperationDelete(f) for f in stale]
        digest = str(folder.manifest.get("digest", ""))[:12]
        message = (
            commit_message
            or f"Upload PathEnhanceDS ({len(folder.data_files)} shards{', ' + digest if digest else ''})"
        )
        # parent_commit: if someone pushed in between, fail instead of silently mixing two builds.
        return api.create_commit(
            repo_id,
            ops,
            commit_message=message,
            repo_type="dataset",
            revision=branch,
            parent_commit=head.sha,
        )
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise InputError(
                f"the Hub refused the request ({status}) for dataset repo {repo_id}",
                fix="use a token with write access to the namespace (`hf auth login`)",
            ) from None
        raise
