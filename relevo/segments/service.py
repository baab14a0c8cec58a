"""Managing segments: definitions from files and the admin API, sizes, members, backfills.

Definitions live in the store (files are loaded into it at start); the processor evaluates a
compiled snapshot of them and is handed a new one, through its command queue, on every change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import yaml

from relevo._clock import Clock
from relevo.errors import NotFound, ValidationError
from relevo.pipeline.processor import Backfill, Processor
from relevo.pipeline.qualify import Definitions
from relevo.profiles.computed import ComputedTraitDef, parse_definitions
from relevo.segments.model import Segment, SegmentDefinition, compile_segment, parse_definition
from relevo.store.base import SegmentStore, StoredSegment


@dataclass(frozen=True)
class SegmentInfo:
    definition: SegmentDefinition
    version: str
    size: int
    backfill: Backfill | None


def load_definition_files(directory: Path) -> tuple[list[SegmentDefinition], list[Any]]:
    """``segments/*.yaml`` (one definition, or a ``segments:`` list, per file) and
    ``computed_traits.yaml`` (a ``computed_traits:`` list) under ``directory``."""
    segments: list[SegmentDefinition] = []
    for path in sorted((directory / "segments").glob("*.y*ml")):
        data = _yaml(path)
        items = data.get("segments", [data]) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValidationError(f"{path}: expected a definition or a 'segments:' list")
        segments.extend(parse_definition(item, f"{path.name}[{i}]") for i, item in enumerate(items))
    traits_file = directory / "computed_traits.yaml"
    traits: list[Any] = []
    if traits_file.is_file():
        data = _yaml(traits_file)
        traits = data.get("computed_traits", []) if isinstance(data, dict) else data
    return segments, traits


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValidationError(f"{path}: not valid YAML: {exc}") from exc


class SegmentService:
    def __init__(
        self,
        store: SegmentStore,
        processor: Processor,
        clock: Clock,
        recheck: timedelta,
        on_processor: Callable[[Callable[[], Any]], Future[Any]],
        event_routes: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        self._event_routes = event_routes
        self._store = store
        self._processor = processor
        self._clock = clock
        self._recheck = recheck
        self._on_processor = on_processor
        self._traits: list[ComputedTraitDef] = []

    @property
    def computed_traits(self) -> list[ComputedTraitDef]:
        return self._traits

    def load(self, directory: Path | None) -> None:
        """At start: store the file definitions, compile everything, hand it to the processor
        (before its thread runs) with a backfill of whatever changed since the last one."""
        if directory is not None:
            definitions, traits = load_definition_files(directory)
            self._traits = parse_definitions(traits)
            for definition in definitions:
                self._put(compile_segment(definition))
        definitions_now, backfill = self._compiled()
        self._processor.reload(definitions_now, backfill)

    def _compiled(self) -> tuple[Definitions, dict[str, str]]:
        segments: list[Segment] = []
        backfill: dict[str, str] = {}
        for stored in self._store.list_segments():
            segment = compile_segment(
                msgspec.json.decode(stored.definition, type=SegmentDefinition)
            )
            segments.append(segment)
            if stored.backfilled_version != segment.version:
                backfill[segment.name] = segment.version
        definitions = Definitions.build(self._traits, segments, self._recheck, self._event_routes())
        return definitions, backfill

    def _put(self, segment: Segment) -> None:
        self._store.put_segment(
            StoredSegment(
                segment.name, msgspec.json.encode(segment.definition), segment.version, None
            ),
            self._clock.now(),
        )

    async def reload(self) -> None:
        """Hand the processor a fresh snapshot (after any definition changed)."""
        definitions, backfill = self._compiled()
        await asyncio.wrap_future(
            self._on_processor(lambda: self._processor.reload(definitions, backfill))
        )

    def validate(self, data: Any) -> Segment:
        return compile_segment(parse_definition(data))

    async def put(self, data: Any, name: str | None = None) -> Segment:
        segment = self.validate(data)
        if name is not None and segment.name != name:
            raise ValidationError(f"the definition is named {segment.name!r}, not {name!r}")
        self._put(segment)
        await self.reload()
        return segment

    async def delete(self, name: str) -> None:
        if not self._store.delete_segment(name):
            raise NotFound(f"no segment {name!r}")
        await self.reload()

    def info(self, name: str) -> SegmentInfo:
        for stored in self._store.list_segments():
            if stored.name == name:
                return self._info(stored)
        raise NotFound(f"no segment {name!r}")

    def all(self) -> list[SegmentInfo]:
        return [self._info(stored) for stored in self._store.list_segments()]

    def _info(self, stored: StoredSegment) -> SegmentInfo:
        definition = msgspec.json.decode(stored.definition, type=SegmentDefinition)
        return SegmentInfo(
            definition,
            stored.version,
            self._store.segment_size(stored.name),
            self._processor.backfills().get(stored.name),
        )

    def members(self, name: str, after: str | None, limit: int) -> list[tuple[str, datetime]]:
        self.info(name)  # NotFound for an unknown segment
        return self._store.segment_members(name, after, limit)
