"""Managing segments: definitions from files and the admin API, sizes, members, backfills.

Definitions live in the store (files are loaded into it at start); the processor evaluates a
compiled snapshot of them and is handed a new one, through its command queue, on every change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import yaml

from relevo._clock import Clock
from relevo.errors import Conflict, ErrorDetail, NotFound, ValidationError
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
    defined_in: dict[str, Path] = {}
    for path in sorted((directory / "segments").glob("*.y*ml")):
        data = _yaml(path)
        items = data.get("segments", [data]) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValidationError(f"{path}: expected a definition or a 'segments:' list")
        for i, item in enumerate(items):
            with _in_file(path):
                definition = parse_definition(item, f"{path.name}[{i}]")
                compile_segment(definition)  # a bad rule names its file, not only its column
            if definition.name in defined_in:
                raise ValidationError(
                    f"{path}: segment {definition.name!r} is also defined in "
                    f"{defined_in[definition.name]}"
                )
            defined_in[definition.name] = path
            segments.append(definition)
    traits_file = directory / "computed_traits.yaml"
    traits: list[Any] = []
    if traits_file.is_file():
        data = _yaml(traits_file)
        traits = data.get("computed_traits", []) if isinstance(data, dict) else data
    return segments, traits


@contextmanager
def _in_file(path: Path) -> Iterator[None]:
    """Re-raise a definition's ValidationError with the file it came from."""
    try:
        yield
    except ValidationError as exc:
        raise ValidationError(f"{path}: {exc.message}", details=exc.details) from exc


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
            with _in_file(directory / "computed_traits.yaml"):
                self._traits = parse_definitions(traits)
            for definition in definitions:
                with _in_file(directory / "segments"):
                    segment = compile_segment(definition)
                    self._check_computed(segment)
                self._put(segment)
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
        await asyncio.wrap_future(self._on_processor(self.install))

    def stamp(self) -> tuple[tuple[str, str], ...]:
        """The stored definitions' versions: another process changed them when this does."""
        return tuple(sorted((s.name, s.version) for s in self._store.list_segments()))

    def install(self) -> None:
        """On the processor's thread, between cycles: compile what is stored now and hand it
        over. (A snapshot compiled elsewhere could be installed after a newer one.)"""
        definitions, backfill = self._compiled()
        self._processor.reload(definitions, backfill)

    def validate(self, data: Any) -> Segment:
        segment = compile_segment(parse_definition(data))
        self._check_computed(segment)
        return segment

    def _check_computed(self, segment: Segment) -> None:
        """A rule naming a computed trait that is not defined would silently read null."""
        known = {d.name for d in self._traits}
        unknown = sorted(
            key
            for root, _, key in (path.partition(".") for path in segment.rule.fields)
            if root == "computed" and key and key not in known
        )
        if unknown:
            message = (
                f"segment {segment.name!r}: unknown computed trait {unknown[0]!r} "
                f"(defined: {', '.join(sorted(known)) or 'none'})"
            )
            raise ValidationError(
                message,
                details=[
                    ErrorDetail("rule", f"unknown computed trait {u!r}", "unknown_computed")
                    for u in unknown
                ],
            )

    async def put(self, data: Any, name: str | None = None, *, create: bool = False) -> Segment:
        """Save a definition (``create``: only if no segment has its name: Conflict)."""
        segment = self.validate(data)
        if name is not None and segment.name != name:
            raise ValidationError(f"the definition is named {segment.name!r}, not {name!r}")

        # on the processor's thread, between cycles: the store's write lock is taken there,
        # not on the event loop, and no cycle runs between the write and the reload
        def put_on_processor() -> None:
            if create and any(s.name == segment.name for s in self._store.list_segments()):
                raise Conflict(
                    f"segment {segment.name!r} exists: PUT /v1/segments/{segment.name} replaces it"
                )
            self._put(segment)
            self.install()

        await asyncio.wrap_future(self._on_processor(put_on_processor))
        return segment

    async def delete(self, name: str) -> None:
        # on the processor's thread, between cycles: a cycle still evaluating the old
        # definitions must not write members of the deleted segment after they are cleared
        def delete_on_processor() -> bool:
            if not self._store.delete_segment(name):
                return False
            self.install()
            return True

        if not await asyncio.wrap_future(self._on_processor(delete_on_processor)):
            raise NotFound(f"no segment {name!r}")

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
