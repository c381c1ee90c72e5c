"""Writing outputs safely: replace only what we wrote, build beside the target, swap atomically.

Every command that writes a folder (`data build`, `data export`, `eval`, push staging) goes through
`atomic_output_dir`; single files (`data score`) through `atomic_output_file`. The rules:

- an existing non-empty output is replaced only with `overwrite=True`, and only when its marker file
  says it is an earlier output of the same kind written by this library (`OUTPUT_KINDS`);
- never a path that is, contains or lies inside a protected path (the command's inputs: `--source`,
  `--sources-dir`, the dataset being exported, ...), and never the current directory, the home folder,
  the filesystem root or a folder that contains one of them (symlinks resolved, inodes compared);
- the new content is written into `.NAME.tmp-PID-HEX` beside the target (created with the user's
  umask), renamed into place on success and removed on any failure, Ctrl-C included; the old folder
  is renamed to `.NAME.old-PID-HEX` and deleted only after the new one is in place;
- temp/old entries left by a killed run (their pid no longer alive) are removed on the next run.

    with atomic_output_dir(output, overwrite=overwrite, kind="dataset", protected=source_paths) as tmp:
        ...  # write everything into tmp, including the kind's marker file
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .registry import Registry

logger = logging.getLogger(__name__)

GENERATOR_KEY = "generator"
_MARKER_READ_LIMIT = 256 * 2**20  # a marker larger than this is not one of ours


# ------------------------------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class OutputKind:
    """What one command writes and how an earlier output of it is recognised."""

    name: str
    command: str  # for messages: "pathinsight data build"
    marker: str  # marker file inside the folder; "" for a file output (the file is its own marker)
    generator: str  # value of the marker's `generator` key
    recognise: Callable[[Path], bool]  # is this existing folder/file an earlier output of this kind?

    @property
    def is_file(self) -> bool:
        """Whether this kind writes a single file (no folder marker)."""
        return not self.marker


OUTPUT_KINDS: Registry[OutputKind] = Registry("output kind")


def list_output_kinds() -> list[str]:
    """Names of the output kinds (`dataset`, `demo`, `eval`, `export`, `push-stage`, `sample`, `scores`, the CLIP
    track's `clip-train`, `clip-eval`, `clip-tiny`, `clip-convert`, `assembled`, ...)."""
    return OUTPUT_KINDS.names()


def _read_marker(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing, too large or not a JSON object."""
    try:
        if not path.is_file() or path.stat().st_size > _MARKER_READ_LIMIT:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return data if isinstance(data, dict) else None


def _generator_is(marker: str, generator: str, legacy: Callable[[dict[str, Any]], bool] | None = None):
    def recognise(folder: Path) -> bool:
        data = _read_marker(folder / marker)
        if data is None:
            return False
        if GENERATOR_KEY in data:
            return data[GENERATOR_KEY] == generator
        return legacy is not None and legacy(data)

    return recognise


def _is_scores_file(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        import pyarrow.parquet as pq

        from .filters.scores_file import META_KEY

        metadata = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - anything unreadable is simply not one of our scores files
        return False
    return META_KEY in metadata


def _register(name: str, command: str, marker: str, generator: str,
              legacy: Callable[[dict[str, Any]], bool] | None = None) -> OutputKind:
    recognise = _is_scores_file if not marker else _generator_is(marker, generator, legacy)
    return OUTPUT_KINDS.register(name, OutputKind(name, command, marker, generator, recognise))


# Builds and eval runs written before the `generator` key existed are recognised by their fields.
_register("dataset", "pathinsight data build", "manifest.json", "pathenhanceds.build",
          legacy=lambda m: m.get("name") == "PathEnhanceDS" and "library_version" in m and "digest" in m)
_register("export", "pathinsight data export", "manifest.json", "pathenhanceds.export")
_register("eval", "pathinsight eval", "results.json", "pathinsight_models.evaluation",
          legacy=lambda m: "schema_version" in m and isinstance(m.get("versions"), dict)
          and "pathinsight" in m["versions"] and "tasks" in m)
_register("push-stage", "pathinsight push model", ".pathinsight-stage.json", "pathinsight_models.publish")
_register("scores", "pathinsight data score", "", "pathenhanceds.filters.scores_file")
_register("demo", "pathinsight demo", ".pathinsight-demo.json", "pathinsight_models.demo")
_register("import", "pathinsight data import", "manifest.json", "pathenhanceds.importing")
# Knowledge track (pathinsight_models.knowledge): the knowledge dataset K and the synthetic cell-patch dataset;
# outputs written before the `generator` key are known by their manifest's name.
_register("knowledge", "pathinsight knowledge build", "manifest.json", "pathinsight_models.knowledge.build",
          legacy=lambda m: m.get("name") == "PathEnhanceDS-knowledge" and "digest" in m)
_register("knowledge-synthetic", "pathinsight knowledge synthetic", "manifest.json",
          "pathinsight_models.knowledge.synthetic",
          legacy=lambda m: m.get("name") == "synthetic-cells" and m.get("synthetic") is True)
# Pathology CLIP track (pathinsight_models.clip). A training run writes its marker first (checkpoints
# must survive a crash for --resume); outputs written before the `generator` key are known by their fields.
_register("clip-train", "pathinsight clip train", "run_info.json", "pathinsight_models.clip.train",
          legacy=lambda m: "model_type" in m and "pairs" in m and "trainable_parameters" in m)
_register("clip-eval", "pathinsight clip eval", "results.json", "pathinsight_models.clip.evaluate",
          legacy=lambda m: "encoder" in m and "tasks" in m and "schema_version" not in m)
_register("clip-tiny", "pathinsight clip tiny", "tiny_clip.json", "pathinsight_models.clip.tiny")
_register("clip-convert", "pathinsight clip convert", "conversion.json", "pathinsight_models.clip.open_clip")
_register("assembled", "pathinsight models assemble", "assembly.json", "pathinsight_models.clip.assemble",
          legacy=lambda m: {"vision", "language", "projector", "image_seq_length"} <= set(m))


def _is_sample_tree(folder: Path) -> bool:
    """A `pathinsight data sample` tree: only source folders, each with its SYNTHETIC.md marker."""
    from .layout import SYNTHETIC_MARKER

    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    return bool(entries) and all(e.is_dir() and not e.is_symlink() and (e / SYNTHETIC_MARKER).is_file()
                                 for e in entries)


OUTPUT_KINDS.register("sample", OutputKind("sample", "pathinsight data sample", "SYNTHETIC.md",
                                           "pathenhanceds.sample", _is_sample_tree))


def marker_fields(kind: str) -> dict[str, str]:
    """The keys a writer puts into its marker file so `--overwrite` may replace its output later."""
    from . import __version__

    return {GENERATOR_KEY: OUTPUT_KINDS.get(kind).generator, "library_version": __version__}


def write_marker(folder: Path, kind: str, **extra: Any) -> Path:
    """Write the kind's marker file (for kinds whose writers have no manifest of their own)."""
    spec = OUTPUT_KINDS.get(kind)
    path = folder / spec.marker
    path.write_text(json.dumps({**marker_fields(kind), **extra}, indent=2, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ guards
def _resolve(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _identities(path: Path) -> set[tuple[int, int]]:
    """(device, inode) of `path` and of every existing ancestor: catches bind mounts and case folding."""
    ids = set()
    for p in (path, *path.parents):
        try:
            st = p.stat()
        except OSError:
            continue
        ids.add((st.st_dev, st.st_ino))
    return ids


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _contains(outer: Path, inner: Path) -> bool:
    """`inner` is `outer` or lies inside it (resolved paths, then inodes)."""
    if inner == outer or outer in inner.parents:
        return True
    ident = _identity(outer)
    return ident is not None and ident in _identities(inner)


_FIX = ("choose another --output: a new or empty folder that is not one of the inputs, the current directory, "
        "your home folder or a folder containing them")


def _refuse_dangerous(target: Path, raw: str | os.PathLike[str], protected: Iterable[str | os.PathLike[str]]) -> None:
    guarded = [(Path(target.anchor or "/"), "the filesystem root"), (_resolve(Path.home()), "your home folder"),
               (_resolve(Path.cwd()), "the current directory")]
    for path, label in guarded:
        if _contains(target, path):
            relation = "is" if path == target or _identity(path) == _identity(target) else "contains"
            raise InputError(f"refusing to write the output here: it {relation} {label} ({path})", file=raw,
                             fix=_FIX)
    for item in protected:
        if item is None or str(item) == "":
            continue
        path = _resolve(item)
        if _contains(target, path):
            relation = "is" if path == target or _identity(path) == _identity(target) else "contains"
        elif _contains(path, target):
            relation = "lies inside"
        else:
            continue
        raise InputError(f"refusing to write the output here: it {relation} the input {path}", file=raw, fix=_FIX)


def _check_parent(target: Path, raw: str | os.PathLike[str]) -> None:
    anc = target.parent
    while not os.path.lexists(anc) and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"the output lies under {anc}, which is not a folder", file=raw,
                         fix="choose an --output whose parent folders are folders (or do not exist yet)")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {anc} (no write permission or read-only)", file=raw,
                         fix="choose an --output in a folder you can write to")


def check_output(
    output: str | os.PathLike[str],
    *,
    overwrite: bool,
    kind: str,
    protected: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Validate `output` for a command writing `kind`; returns the resolved target path.

    Raises `InputError` (file + fix) when the output exists and `overwrite` is off, when it exists but
    is not an earlier output of this kind, when it is dangerous (see the module docstring), when its
    parent cannot hold it, or when a live run is writing it. The only thing it changes: entries that
    killed runs left beside the output are removed (`clean_stale`).
    """
    spec = OUTPUT_KINDS.get(kind)
    if str(output) == "":
        raise InputError("the output path is empty", fix="pass --output PATH")
    target = _resolve(output)
    _refuse_dangerous(target, output, [p for p in protected if p is not None])
    clean_stale(target)  # before the checks below: it may put back an output a killed swap had moved aside
    if os.path.lexists(target):
        if spec.is_file:
            if target.is_dir():
                raise InputError("the output is an existing folder, not a file", file=output,
                                 fix="pass a file path to --output")
            if not overwrite:
                raise InputError("the output file already exists", file=output,
                                 fix="pass --overwrite to replace it, or choose another --output")
            if not spec.recognise(target):
                raise InputError(f"the output file exists and was not written by `{spec.command}`; "
                                 "--overwrite replaces only such files", file=output,
                                 fix="choose another --output; if you do want to replace it, delete it yourself first")
        else:
            if not target.is_dir():
                raise InputError("the output exists and is not a folder", file=output, fix="choose another --output")
            try:
                empty = next(target.iterdir(), None) is None
            except OSError as exc:
                raise InputError(f"cannot list the output folder ({exc.strerror})", file=output,
                                 fix="choose another --output") from None
            if not empty:
                if not overwrite:
                    raise InputError("the output folder already exists and is not empty", file=output,
                                     fix=f"pass --overwrite to replace an earlier `{spec.command}` output, "
                                         "or choose another --output")
                if not spec.recognise(target):
                    raise InputError(
                        f"the output folder is not empty and is not an earlier `{spec.command}` output (no "
                        f"{spec.marker} written by it); --overwrite replaces only such folders", file=output,
                        fix="choose another --output (a new or empty folder); if you do want to replace this "
                            "folder, delete it yourself first")
    _check_parent(target, output)
    return target


# -------------------------------------------------------------------------------------- temp names
_PID_RE = r"(?P<pid>\d+)-[0-9a-f]{8}"


def _temp_name(target: Path, what: str) -> str:
    return f".{target.name}.{what}-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed run that its parent has not reaped yet is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_entries(target: Path) -> list[tuple[Path, int, str]]:
    """(path, pid, "tmp"|"old") of temp/old entries beside `target` written by runs that no longer live."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?P<what>tmp|old)-{_PID_RE}$")
    found = []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _alive(int(match["pid"])):
            found.append((entry, int(match["pid"]), match["what"]))
    return sorted(found)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(target: Path) -> list[Path]:
    """Remove what killed runs left beside `target` (an `.old` copy is restored if `target` is gone)."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.tmp-{_PID_RE}$")
    try:
        busy = [e for e in target.parent.iterdir() if (m := pattern.match(e.name)) and int(m["pid"]) != os.getpid()
                and _alive(int(m["pid"]))]
    except OSError:
        busy = []
    if busy:
        raise InputError(f"another run is writing this output right now ({busy[0].name})", file=target,
                         fix=f"wait for it to finish or choose another --output; if no such run exists, "
                             f"delete {busy[0]}")
    removed = []
    for entry, pid, what in stale_entries(target):
        if what == "old" and not os.path.lexists(target):
            entry.rename(target)  # killed between the two renames of a swap: put the earlier output back
            logger.warning("restored %s from %s, left by an interrupted run (pid %d)", target, entry.name, pid)
            continue
        _remove(entry)
        removed.append(entry)
        logger.warning("removed %s, left by an interrupted run (pid %d)", entry, pid)
    return removed


_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Run a short block with SIGINT/SIGTERM held back; one that arrives meanwhile is re-delivered right after.

    Used around a folder swap and around forking worker processes. Blocking the signal mask alone is
    not enough: another thread may receive the signal and Python then runs the handler in the main
    thread anyway (inside a fork hook it would even be swallowed), so the handlers are replaced by a
    recorder too. Children forked inside the block start with the signals blocked. Main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def record(signum: int, frame: Any) -> None:
        pending.append(signum)

    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    previous = {sig: signal.signal(sig, record) for sig in _HELD_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if pending:
            signal.raise_signal(pending[0])


def replace_dir(tmp: Path, output: Path) -> None:
    """Move the finished `tmp` to `output`; an old `output` is removed only after the rename succeeds."""
    if os.path.lexists(output):
        old = output.with_name(_temp_name(output, "old"))
        with deferred_signals():  # never half a swap
            output.rename(old)
            try:
                tmp.rename(output)
            except BaseException:
                old.rename(output)
                raise
        _remove(old)
    else:
        tmp.rename(output)


def _make_temp_dir(target: Path, raw: str | os.PathLike[str]) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output's parent folder ({exc.strerror})", file=raw,
                         fix="choose an --output in a folder you can write to") from None
    for _ in range(100):
        tmp = target.with_name(_temp_name(target, "tmp"))
        try:
            os.mkdir(tmp, 0o777)  # the umask applies (mkdtemp would make it 0700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"cannot create a folder beside the output ({exc.strerror})", file=raw,
                             fix="choose an --output in a folder you can write to") from None
        return tmp
    raise InputError("cannot create a temporary folder beside the output", file=raw, fix="choose another --output")


# ---------------------------------------------------------------------------------- context managers
def begin_output_dir(output: str | os.PathLike[str], *, kind: str) -> Path:
    """Clean stale entries of killed runs beside the (already checked) `output`; make and return the temp folder.

    The two-step form of `atomic_output_dir` for writers with their own try/except: on success call
    `commit_output_dir(tmp, output, kind=...)`, on failure `shutil.rmtree(tmp)`.
    """
    OUTPUT_KINDS.get(kind)
    target = _resolve(output)
    clean_stale(target)  # again: the caller may have checked long ago
    return _make_temp_dir(target, output)


def commit_output_dir(tmp: Path, output: str | os.PathLike[str], *, kind: str) -> None:
    """Check the kind's marker file is in `tmp` and swap `tmp` into place."""
    spec = OUTPUT_KINDS.get(kind)
    if not spec.recognise(tmp):
        raise RuntimeError(f"`{spec.command}` wrote no {spec.marker} marker into its output")
    replace_dir(tmp, _resolve(output))


@contextmanager
def atomic_output_dir(
    output: str | os.PathLike[str],
    *,
    overwrite: bool,
    kind: str,
    protected: Iterable[str | os.PathLike[str] | None] = (),
) -> Iterator[Path]:
    """Yield an empty temp folder beside `output`; on success it replaces `output`, on failure it is removed.

    `check_output` runs first (callers may also call it earlier to fail before slow work), stale
    entries of killed runs are cleaned, and the kind's marker file must have been written into the folder.
    """
    target = check_output(output, overwrite=overwrite, kind=kind, protected=protected)
    tmp = begin_output_dir(target, kind=kind)
    try:
        yield tmp
        commit_output_dir(tmp, target, kind=kind)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_output_file(
    output: str | os.PathLike[str],
    *,
    overwrite: bool,
    kind: str,
    protected: Iterable[str | os.PathLike[str] | None] = (),
) -> Iterator[Path]:
    """Yield a temp path beside the file `output`; on success it replaces `output`, on failure it is removed."""
    target = check_output(output, overwrite=overwrite, kind=kind, protected=protected)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output's parent folder ({exc.strerror})", file=output,
                         fix="choose an --output in a folder you can write to") from None
    tmp = target.with_name(_temp_name(target, "tmp"))
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
