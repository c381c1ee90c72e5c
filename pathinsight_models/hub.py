"""Hugging Face Hub helpers shared by `publish/` and `leaderboard/`: ids, leak checks, the API client.

- `check_repo_id` / `is_hub_id`: an ``ORG/NAME`` the Hub accepts, never a local path;
- `is_local_path`, `find_local_paths`, `check_no_leaks`, `check_publishable`: nothing published may
  reveal where files sat on this machine, nor the token;
- `hub_api`: the `huggingface_hub.HfApi` client (an injected one is passed through, so tests and
  callers that already hold a client reuse it).

The token is only ever handed to `huggingface_hub`; it is never logged or written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError

REPO_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
MAX_REPO_ID_LENGTH = 96
# Files of a publishable folder that are read as text for the local-path check.
TEXT_SUFFIXES = (".json", ".yaml", ".yml", ".md", ".jinja", ".txt", ".model")
# Top-level folders where local data usually lives. Together with this machine's own top-level
# folders (minus system ones) they make up what an "absolute local path" looks like.
_COMMON_ROOTS = {
    "home", "Users", "root", "tmp", "var", "mnt", "media", "data", "scratch", "work", "opt", "srv",
    "private", "Volumes", "gpfs", "lustre", "nfs", "net", "content", "workspace", "storage",
}  # fmt: skip
_SYSTEM_ROOTS = {"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin", "sys", "usr"}


def check_repo_id(repo_id: str, what: str = "repo id", example: str = "my-lab/pathinsight-llava-lora") -> str:
    """`repo_id` if it is a valid Hub ``ORG/NAME``; an `InputError` naming `what` otherwise."""
    if not REPO_ID_RE.fullmatch(repo_id or "") or "--" in repo_id or len(repo_id) > MAX_REPO_ID_LENGTH:
        raise InputError(f"invalid {what} {repo_id!r}", fix=f"use ORG/NAME, e.g. {example}")
    return repo_id


def is_local_path(value: str | None) -> bool:
    """True for anything that names a place on this machine rather than a Hub id."""
    if not value:
        return False
    text = str(value)
    return (
        os.path.isabs(text)
        or text.startswith(("./", "../", "~", "file:"))
        or bool(re.match(r"^[A-Za-z]:[\\/]", text))
        or Path(text).expanduser().exists()
    )


def is_hub_id(value: str | None) -> bool:
    """True for an ``ORG/NAME`` that is not also a path on this machine."""
    return bool(value) and not is_local_path(value) and bool(REPO_ID_RE.fullmatch(str(value)))


def _local_roots() -> set[str]:
    try:
        here = {p.name for p in Path("/").iterdir() if p.is_dir()}
    except OSError:
        here = set()
    return _COMMON_ROOTS | (here - _SYSTEM_ROOTS)


def find_local_paths(text: str, extra: Sequence[str] = ()) -> list[str]:
    """Local absolute paths in `text`: POSIX paths under a data root, `file://` URLs, `C:\\...`, `extra`."""
    # Not preceded by a word character, ':', '/', '.', '~' or '-': then it is part of a URL or a relative path.
    before = r"(?<![\w:/.~-])"
    roots = "|".join(sorted(re.escape(r) for r in _local_roots()))
    patterns = [
        before + rf"/(?:{roots})(?:/[^\s\"'`<>()\[\]{{}},;|]+)+",
        r"(?<![\w])[A-Za-z]:(?:\\\\|\\|/)[^\s\"'`<>|()]+",
        r"file://[^\s\"'`<>]+",
        *(before + re.escape(p) + r"(?![\w.-])" for p in extra if len(p) > 1),
    ]
    return sorted({m.group(0) for pattern in patterns for m in re.finditer(pattern, text)})


def home_paths() -> list[str]:
    """This user's home directory as an extra local path to look for (unless it is `/`)."""
    home = str(Path.home())
    return [home] if home not in ("/", "") else []


def check_no_leaks(
    text: str, *, name: str, file: str | os.PathLike[str], token: str | None, extra_paths: Sequence[str], fix: str
) -> None:
    """Refuse `text` (the content of `name`) when it holds the token or a local absolute path."""
    if token and token in text:
        raise InputError(f"{name} contains your Hugging Face token", file=file, fix="remove the token from the file")
    leaks = find_local_paths(text, extra_paths)
    if leaks:
        more = " and more" if len(leaks) > 1 else ""
        raise InputError(f"{name} contains a local absolute path ({leaks[0]!r}{more})", file=file, fix=fix)


def check_publishable(folder: Path, *, token: str | None, extra_paths: Sequence[str]) -> None:
    """Refuse a folder whose files hold the token, or whose text files hold a local absolute path."""
    extra = [p for p in [*extra_paths, *home_paths()] if p]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        if token and token.encode() in data:  # binary files too (weights, images)
            raise InputError(f"{rel} contains your Hugging Face token", file=rel, fix="remove the token from it")
        if path.suffix in TEXT_SUFFIXES or path.name == "README.md":
            check_no_leaks(
                data.decode("utf-8", errors="replace"), name=rel, file=rel, token=None, extra_paths=extra,
                fix="published cards and configs must not reveal local paths: pass Hub ids "
                "(--base-model-id, --dataset-id) or edit the file in the run directory",
            )


def hub_api(api: Any = None, token: str | None = None) -> Any:
    """`api` when given, else a new `huggingface_hub.HfApi` with `token` (None: the logged-in token)."""
    if api is not None:
        return api
    from huggingface_hub import HfApi

    return HfApi(token=token)
