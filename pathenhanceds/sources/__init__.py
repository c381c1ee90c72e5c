"""Raw-source readers, registered by name (one module per source)."""

from .base import SOURCES, BuildContext, Source, SourceRecord, get_source, register_source

# Importing the modules registers the readers.
from . import crc, llava_med, openpath, pathologist_level, pathvqa, pcam  # noqa: E402,F401  isort: skip

__all__ = ["SOURCES", "BuildContext", "Source", "SourceRecord", "get_source", "register_source"]
