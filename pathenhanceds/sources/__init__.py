"""Raw-source readers, registered by name (one module per source)."""

from .base import SOURCES, BuildContext, Source, SourceRecord, get_source, list_sources, register_source

# Importing the modules registers the readers.
from . import bladder, crc, llava_med, openpath, pathgen, pathvqa, pcam  # noqa: E402,F401  isort: skip
from . import pathgen_instruct, pathinstruct, pmc_vqa, quilt_instruct  # noqa: E402,F401  isort: skip

__all__ = ["SOURCES", "BuildContext", "Source", "SourceRecord", "get_source", "list_sources", "register_source"]
