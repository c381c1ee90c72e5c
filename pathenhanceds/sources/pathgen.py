"""PathGen-1.6M: captions of 672x672 level-0 patches of TCGA diagnostic slides, cut here with OpenSlide.

Native layout: DIR holds the PathGen JSON (`PathGen-1.6M.json`, or the repository's
`PathGen-1.6M_sample.json`): a list of `{"wsi_id": "TCGA-...-DX1.<uuid>", "position": ["x", "y"],
"caption": "..."}` (their README code spells the key `WSI_id`; both are read, positions may be strings
or numbers). Slides are the user's own GDC download under `DIR/slides/` or `--pathgen-slides PATH`, at
any depth (gdc-client writes `<file_uuid>/<file_name>.svs`), matched by file stem = `wsi_id`.

Records are listed without touching slides; `resolve` (called by the selection planners, which see the
options) indexes the slides once, skips and counts records whose slide is absent, reads each used
slide's header once (size and microns per pixel) and checks every patch lies inside its slide.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import InputError, RecordError
from ..images import ImagePayload, png_rgb8
from ..jsonio import load_json
from ..wsi import SlideIndex, SlideInfo, build_slide_index, probe_slide
from .base import BuildContext, Source, SourceRecord, register_source

JSON_NAMES = ("PathGen-1.6M.json", "PathGen-1.6M_sample.json", "PathGen_dataset.json")
PATCH_SIZE = 672  # Patch_selection/wsi_representative_patch_extraction.py: patch_size = 336 * 2, level 0
IMAGE_FORMATS = ("png", "jpeg")
JPEG_QUALITY = 95
_TCGA = re.compile(r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", re.IGNORECASE)
_PROJECT_DIR = re.compile(r"^TCGA-[A-Z]{2,5}$")


def patient_of(wsi_id: str) -> str:
    """The TCGA patient barcode (`TCGA-TSS-PPPP`, the first 12 characters); the whole id otherwise."""
    return wsi_id[:12].upper() if _TCGA.match(wsi_id) else wsi_id


def encode_patch(pixels: np.ndarray, image_format: str) -> ImagePayload:
    """Encode a patch deterministically (same pixels and library versions → same bytes on every worker)."""
    if image_format == "png":
        return ImagePayload(png_rgb8(pixels), "png")
    if image_format == "jpeg":
        import io

        from PIL import Image

        buffer = io.BytesIO()
        # 4:4:4 keeps nuclear detail; no EXIF, no optimisation passes: bytes depend on the pixels only.
        Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        return ImagePayload(buffer.getvalue(), "jpeg")
    raise InputError(f"unknown PathGen image format {image_format!r}",
                     fix=f"use --pathgen-image-format {' or '.join(IMAGE_FORMATS)}")


@dataclasses.dataclass
class Resolution:
    """What `PathGen.resolve` found: the records it can cut, and what it could not."""

    records: list[SourceRecord]
    missing_records: int
    missing_slides: list[str]
    slides: dict[str, SlideInfo]


@register_source
class PathGen(Source):
    """PathGen-1.6M: captions with TCGA slide positions; patches cut from the slides with OpenSlide."""
    name = "pathgen"
    # The dataset README says "license: cc-by-4.0" and asks users to agree to research-only, non-commercial
    # use; the non-commercial term is what propagates to a built dataset. Patches come from TCGA (GDC open access).
    license = "CC-BY-NC-4.0"
    description = ("PathGen-1.6M captions of 672x672 px level-0 patches cut from TCGA diagnostic slides "
                   "(Sun et al. 2024), research-only terms")

    def __init__(self, path: str | os.PathLike[str], slides: str | os.PathLike[str] | None = None):
        super().__init__(path)
        self.json_file = self._find_json()
        self.slides = Path(slides).expanduser() if slides is not None else None
        self.stats: dict[str, Any] = {}
        self._cache_index: SlideIndex | None = None
        self._cache_slide: Any = None  # (path, Slide): one slide open per process

    def _find_json(self) -> Path:
        if self.path.is_file():
            return self.path
        for name in JSON_NAMES:
            if (self.path / name).is_file():
                return self.path / name
        found = sorted(p for p in self.path.glob("*.json") if p.name.lower().startswith("pathgen"))
        if found:
            return found[0]
        raise InputError("no PathGen JSON found", file=self.path,
                         fix=f"put {' or '.join(JSON_NAMES[:2])} in the folder passed as --source pathgen=DIR")

    @property
    def source_root(self) -> Path:
        """The folder holding the JSON (slides may live elsewhere: `--pathgen-slides`)."""
        return self.path if self.path.is_dir() else self.path.parent

    def slide_roots(self, slides: str | os.PathLike[str] | None = None) -> list[Path]:
        """Where slides are looked for: `slides` (the option), the constructor's, or DIR/slides/."""
        chosen = slides or self.slides
        if chosen:
            return [Path(chosen).expanduser()]
        default = self.source_root / "slides"
        if not default.is_dir():
            raise InputError("no slide folder: DIR/slides/ does not exist and --pathgen-slides was not given",
                             file=default, fix="download the TCGA slides with gdc-client into DIR/slides/, or pass "
                             "--pathgen-slides PATH (see docs/pathgen.md)")
        return [default]

    def index(self, slides: str | os.PathLike[str] | None = None) -> SlideIndex:
        """The slide index, built once per process and set of roots."""
        roots = tuple(self.slide_roots(slides))
        if self._cache_index is None or self._cache_index.roots != roots:
            self._cache_index = build_slide_index(roots, limits=self.lim)
        return self._cache_index

    # ---- records

    def records(self, ctx: BuildContext) -> Iterator[SourceRecord]:
        self.bind(ctx)
        data = load_json(self.json_file, limits=self.lim)
        if not isinstance(data, list):
            raise InputError(f"expected a JSON list of records, got {type(data).__name__}", file=self.json_file,
                             fix="pass PathGen-1.6M.json or PathGen-1.6M_sample.json as distributed")
        seen: Counter[str] = Counter()
        for i, item in enumerate(data):
            try:
                wsi_id, x, y, caption = self._parse(item, i)
            except RecordError as err:
                ctx.bad_record(err)
                continue
            base = f"{wsi_id}/{x}_{y}"
            seen[base] += 1
            # The same patch captioned twice keeps both rows, numbered in file order.
            record_id = base if seen[base] == 1 else f"{base}#{seen[base]}"
            yield SourceRecord(self.name, record_id, "PathGen-1.6M", ("wsi", wsi_id, x, y),
                               {"wsi_id": wsi_id, "x": x, "y": y, "caption": caption,
                                "patient": patient_of(wsi_id), "index": i})

    def _parse(self, item: Any, i: int) -> tuple[str, int, int, str]:
        def bad(why: str) -> RecordError:
            return RecordError(why, file=self.json_file, record=i,
                               fix='each record must be {"wsi_id": ..., "position": ["x", "y"], "caption": ...}')

        if not isinstance(item, dict):
            raise bad(f"record is a {type(item).__name__}, not an object")
        wsi_id = item.get("wsi_id", item.get("WSI_id"))
        if not isinstance(wsi_id, str) or not wsi_id.strip() or "/" in wsi_id or "\\" in wsi_id:
            raise bad(f"wsi_id {wsi_id!r} is not a slide name")
        position = item.get("position")
        if not isinstance(position, list | tuple) or len(position) != 2:
            raise bad(f"position {position!r} is not [x, y]")
        try:
            x, y = (int(str(v).strip()) for v in position)
        except ValueError:
            raise bad(f"position {position!r} is not two integers") from None
        caption = item.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise bad("caption is missing or empty")
        return wsi_id.strip(), x, y, caption.strip()

    # ---- resolving records to slides (planners call this: they see the options)

    def project_of(self, wsi_id: str, projects: dict[str, str]) -> str:
        """The TCGA project of a slide from PathGen's `svs_path_list.txt`, else its tissue-source-site code."""
        key = wsi_id.lower()
        if key in projects:
            return projects[key]
        return f"TSS {wsi_id[5:7].upper()}" if _TCGA.match(wsi_id) else "not TCGA"

    def _project_table(self) -> dict[str, str]:
        # PathGen's Patch_selection/svs_path_list.txt lists .../TCGA-<PROJECT>/<uuid>/<name>.svs for every slide.
        from ..limits import read_regular
        from ..wsi import slide_key

        path = self.source_root / "svs_path_list.txt"
        if not path.is_file():
            return {}
        text = read_regular(path, max_bytes=self.lim.max_json_bytes, limit_name="max_json_bytes",
                            error=InputError, limits=self.lim).decode("utf-8", "replace")
        table = {}
        for line in text.splitlines():
            parts = line.strip().replace("\\", "/").split("/")
            project = next((p for p in reversed(parts[:-1]) if _PROJECT_DIR.match(p)), None)
            if project and parts[-1]:
                table[slide_key(parts[-1])] = project
        return table

    def resolve(self, records: list[SourceRecord], ctx: BuildContext, *, patch_size: int = PATCH_SIZE,
                image_format: str = "png", slides: str | os.PathLike[str] | None = None,
                threads: int = 8) -> Resolution:
        """Records with their slide found, header read and patch inside the slide, ready to cut.

        Absent slides: records skipped and counted (notes + `stats`). An unreadable slide or a patch
        outside its slide: a `RecordError` naming the slide (`ctx.bad_record`: fatal unless skipping).
        """
        if not isinstance(patch_size, int) or isinstance(patch_size, bool) or not 16 <= patch_size <= 8192:
            raise InputError(f"PathGen patch size must be an integer from 16 to 8192, not {patch_size!r}",
                             fix=f"pass --pathgen-patch-size N (PathGen used {PATCH_SIZE})")
        if image_format not in IMAGE_FORMATS:
            raise InputError(f"unknown PathGen image format {image_format!r}",
                             fix=f"use --pathgen-image-format {' or '.join(IMAGE_FORMATS)}")
        index = self.index(slides)
        wanted = sorted({r.fields["wsi_id"] for r in records})
        found = {w: index.lookup(w) for w in wanted}
        missing = [w for w in wanted if found[w] is None]
        present = [w for w in wanted if found[w] is not None]
        infos: dict[str, SlideInfo] = {}
        errors: dict[str, RecordError] = {}

        def probe(wsi_id: str) -> tuple[str, SlideInfo | RecordError]:
            try:
                return wsi_id, probe_slide(found[wsi_id], limits=self.lim)
            except RecordError as err:
                return wsi_id, err

        # OpenSlide releases the GIL while parsing headers: threads overlap the (network) file reads.
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for wsi_id, result in tqdm(pool.map(probe, present), total=len(present), desc="reading slide headers",
                                       unit="slide", leave=False, disable=len(present) < 50):
                if isinstance(result, RecordError):
                    errors[wsi_id] = result
                else:
                    infos[wsi_id] = result
        kept: list[SourceRecord] = []
        missing_set = set(missing)
        missing_records = 0
        for rec in records:
            wsi_id, x, y = rec.fields["wsi_id"], rec.fields["x"], rec.fields["y"]
            if wsi_id in missing_set:
                missing_records += 1
                continue
            path = found[wsi_id]
            if wsi_id in errors:
                err = errors[wsi_id]
                ctx.bad_record(RecordError(err.reason, file=path, record=rec.record_id, fix=err.fix))
                continue
            info = infos[wsi_id]
            if x < 0 or y < 0 or x + patch_size > info.width or y + patch_size > info.height:
                ctx.bad_record(RecordError(
                    f"patch at ({x}, {y}) of {patch_size}x{patch_size} px lies outside the slide "
                    f"({info.width}x{info.height} px at level 0)", file=path, record=rec.record_id,
                    fix="check that the slide is the one the record was cut from, or pass --on-error skip"))
                continue
            kept.append(dataclasses.replace(
                rec, locator=("wsi", str(path), x, y, patch_size, image_format),
                fields={**rec.fields, "slide": index.relative(path), "mpp_x": info.mpp_x, "mpp_y": info.mpp_y}))
        projects = self._project_table() if missing else {}
        by_project = Counter(self.project_of(w, projects) for w in missing)
        self.stats = {
            "json": self.json_file.name,
            "records": len(records),
            "patch_size": patch_size,
            "image_format": image_format,
            "slides_indexed": len(index),
            "slides_referenced": len(wanted),
            "slides_used": len(infos),
            "slides_unreadable": len(errors),
            "missing_slides": len(missing),
            "missing_records": missing_records,
            "missing_by_project": dict(sorted(by_project.items())),
            "duplicate_stems": len(index.duplicates),
            "duplicates": index.duplicate_report(),
            "slides": {w: {"file": index.relative(found[w]), **infos[w].as_dict()} for w in sorted(infos)},
        }
        if missing:
            top = ", ".join(f"{p} ({n})" for p, n in by_project.most_common(12))
            ctx.note(f"pathgen: {missing_records} of {len(records)} records skipped because their slide is not "
                     f"downloaded ({len(missing)} of {len(wanted)} slides absent; by project: {top})")
        if index.duplicates:
            first = index.duplicate_report(1)[0]
            ctx.note(f"pathgen: {len(index.duplicates)} slide names occur more than once under the slide folder; "
                     f"the first by (OpenSlide format, depth, path) is used, e.g. {first['used']} over "
                     f"{', '.join(first['ignored'])} (all listed in the manifest)")
        no_mpp = sorted(w for w, info in infos.items() if info.mpp_x is None)
        if no_mpp:
            ctx.warn(f"pathgen: {len(no_mpp)} slide(s) carry no microns-per-pixel, e.g. {no_mpp[0]}; their rows "
                     "have mpp None")
        return Resolution(kept, missing_records, missing, infos)

    # ---- pixels

    def group_key(self, record: SourceRecord) -> str | None:
        """Records of one slide form one group (the executors open each slide once)."""
        return record.locator[1] if record.locator[0] == "wsi" and len(record.locator) == 6 else None

    def _slide(self, path: str, record: object) -> Any:
        from ..wsi import Slide

        cached = self._cache_slide
        if cached is not None and cached[0] == path and os.getpid() == cached[2]:
            return cached[1]
        self.close()  # one slide open per process keeps memory flat (~34 MB per open handle)
        slide = Slide(path, record=record, limits=self.lim)
        self._cache_slide = (path, slide, os.getpid())
        return slide

    def load_pixels(self, record: SourceRecord) -> np.ndarray:
        """The record's RGB patch, cut at level 0 (`RecordError` naming the slide if it cannot be)."""
        if record.locator[0] != "wsi" or len(record.locator) != 6:
            raise RecordError("record was not resolved to a slide", record=record.record_id,
                              fix="plan PathGen records through a selection planner (it calls PathGen.resolve)")
        _, path, x, y, size, _fmt = record.locator
        return self._slide(path, record.record_id).read(x, y, size, record=record.record_id)

    def encode_pixels(self, record: SourceRecord, pixels: np.ndarray) -> ImagePayload:
        """The stored image of a patch, in the planned format."""
        return encode_patch(pixels, record.locator[5])

    def load_image(self, record: SourceRecord) -> ImagePayload:
        return self.encode_pixels(record, self.load_pixels(record))

    def input_files(self) -> list[Path]:
        # Only the JSON: slides are terabytes (their names, sizes and MPP are in `stats`).
        return [self.json_file]

    def close(self) -> None:
        cached = self._cache_slide
        self._cache_slide = None
        if cached is not None and cached[2] == os.getpid():
            cached[1].close()
