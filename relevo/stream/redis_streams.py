"""The event log on Redis Streams (``RELEVO_STREAM_URL=redis://host:port/db?prefix=relevo``).

Layout: one stream per partition, ``<prefix>:p<n>``; each entry has two fields, ``k`` (the
profile key, so erasure can find it) and ``d`` (the encoded event). Redis 7.0 or later, a single
primary (with replicas if you like), not Redis Cluster: one script touches several partitions.

Offsets are dense per partition, as in the embedded log: entries are appended with ``XADD
<stream> 0-* ...``, so Redis numbers each partition's entries ``0-1``, ``0-2``, ... and the
offset is that sequence number. Redis never hands an id out twice, even after its entry is
erased (a stream keeps its last id), so an offset a consumer committed is never reused. Entry
ids carry no time, and the streams must be written by this log only (an entry with a
time-based id would make the next ``0-*`` fail, not misnumber).

Append: one ``EVALSHA`` per batch (one round trip; the reply is one flag per item plus the
first copies of duplicates). For each item the script deduplicates and appends atomically:
``<prefix>:dedup:<source>:<messageId>`` (the source percent-encoded) is ``SET ... PX <window>``
to ``"<offset> <partition>"``. When the key exists, the item is a duplicate and the script
returns the first copy's payload, which Python compares with the injected ``same_payload`` (the
meaning of the embedded log's conflicts: a retry whose receipt fields differ is no conflict). A
first copy that was erased cannot be compared, so no conflict is claimed. The window runs on
the Redis server's clock, from the first copy. Dedup keys live in memory: about 100 bytes per
event within the window.

Durability: Redis acknowledges a write once it is in memory; whether it survives is the
server's persistence setting, which Relevo cannot change. ``start()`` reads it (``CONFIG GET``;
a server with ``CONFIG`` disabled is tolerated with a warning) and logs a warning when it is not
durable:

- ``appendonly yes`` + ``appendfsync always``: the AOF is fsynced before Redis replies to any
  client, so an acknowledged append survives a crash or a power cut, and no reader sees an entry
  before it is durable. Recommended.
- ``appendfsync everysec`` (Redis's default): on Redis 7.2 or later the log sends ``WAITAOF 1 N``
  after each batch (in the same round trip), so an append returns only once fsynced, at the
  cost of up to a second of latency (``?waitaof=off`` turns that off). Other clients (the
  processor) may still read an entry before its fsync; should Redis then lose it and the client
  resend it, it is applied twice: only ``always`` closes that gap. Before 7.2 there is no
  ``WAITAOF``: a crash of ``redis-server`` alone normally loses nothing acknowledged (the AOF is
  written before the reply, unless a slow disk made Redis postpone that write), but a power cut
  or kernel crash loses up to about a second (two at worst).
- ``appendonly no``: nothing is durable. A restart keeps only the last RDB snapshot, if any.

``?replicas=N`` additionally waits (``WAIT``/``WAITAOF``) until N replicas have the batch, and
fails the append otherwise (the events may still be stored: a retry is deduplicated).

Reading (a script that returns ``[offset, payload, ...]`` flat: cheaper to parse than an
``XRANGE`` reply) and ``wait`` (a blocking ``XREAD``) use a synchronous client on the processor
thread; ``append`` and ``erase_keys`` run the same client on a small thread pool so they never
block the event loop. Erasure scans the key's partition 1000 entries per script call and deletes
(``XDEL``) the key's entries server-side; the deleted entries stay in the AOF file until its
next rewrite (``BGREWRITEAOF``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar
from urllib.parse import quote

import redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from relevo.errors import BackendError
from relevo.events.keys import partition_of
from relevo.stream.base import Append, AppendOutcome, Record, StreamCapabilities

log = logging.getLogger(__name__)

SCAN_CHUNK = 1000
APPEND_THREADS = 8
MAX_BLOCK_SECONDS = 5.0  # the longest one XREAD in ``wait`` blocks (it may return early)

SCRIPTS = {
    # ARGV: the stream key prefix ("<prefix>:p"), the dedup window in ms, then four per item:
    # partition, dedup key ('' when not deduplicated), profile key, payload. Returns a string
    # with a flag per item, 'a' accepted, 'd' duplicate or 'e' duplicate of an erased event,
    # followed by the first copy of each 'd' in order.
    "append": """
local streams, window = ARGV[1], ARGV[2]
local flags, out = {}, {''}
for i = 3, #ARGV, 4 do
  local partition, dedup, key, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local first = false
  if dedup ~= '' then first = redis.call('GET', dedup) end
  if first then
    local offset, p = string.match(first, '^(%d+) (%d+)$')
    local entry = redis.call('XRANGE', streams .. p, '0-' .. offset, '0-' .. offset)[1]
    if entry then
      flags[#flags + 1] = 'd'
      out[#out + 1] = entry[2][4]
    else
      flags[#flags + 1] = 'e'
    end
  else
    local id = redis.call('XADD', streams .. partition, '0-*', 'k', key, 'd', payload)
    if dedup ~= '' then
      redis.call('SET', dedup, string.sub(id, 3) .. ' ' .. partition, 'PX', window)
    end
    flags[#flags + 1] = 'a'
  end
end
out[1] = table.concat(flags)
return out
""",
    # KEYS[1]: a partition stream; ARGV: the offset to read after, the count.
    # Returns {offset, payload, offset, payload, ...}.
    "read": """
local entries = redis.call('XRANGE', KEYS[1], '(0-' .. ARGV[1], '+', 'COUNT', ARGV[2])
local out = {}
for i, entry in ipairs(entries) do
  out[2 * i - 1] = tonumber(string.sub(entry[1], 3))
  out[2 * i] = entry[2][4]
end
return out
""",
    # KEYS: the partition streams. Returns the offset of each one's last entry (0: none).
    "ends": """
local out = {}
for i, key in ipairs(KEYS) do
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  if last then out[i] = tonumber(string.sub(last[1], 3)) else out[i] = 0 end
end
return out
""",
    # KEYS[1]: a partition stream; ARGV: the start ('-' or '(<id>'), the count, the profile
    # keys to erase. Returns {entries erased, entries scanned, the last id scanned}.
    "erase": """
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local erased = 0
for _, entry in ipairs(entries) do
  if wanted[entry[2][2]] then erased = erased + redis.call('XDEL', KEYS[1], entry[1]) end
end
local last = entries[#entries]
return {erased, #entries, last and last[1] or ''}
""",
}


class RedisStreamsLog:
    """``redis://host:port/db`` with options ``prefix``, ``replicas`` and ``waitaof``."""

    capabilities: ClassVar[StreamCapabilities] = StreamCapabilities(
        shared_between_processes=True, deduplicates=True
    )

    def __init__(
        self,
        url: str,
        *,
        partitions: int,
        dedup_window_seconds: float,
        same_payload: Callable[[bytes, bytes], bool] = bytes.__eq__,
        prefix: str = "relevo",
        replicas: int = 0,
        wait_aof: bool = True,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.name = f"redis:{prefix}"
        self.partitions = partitions
        self.prefix = prefix
        self._window_ms = max(1, round(dedup_window_seconds * 1000))
        self._same_payload = same_payload
        self._replicas = replicas
        self._want_wait_aof = wait_aof
        self._timeout_ms = round(timeout_seconds * 1000)
        # no call may hang on a dead connection (``?socket_timeout=`` in the URL overrides)
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds + MAX_BLOCK_SECONDS,
        )
        self._streams = [f"{prefix}:p{p}" for p in range(partitions)]
        self._shas: dict[str, str] = {}
        self._wait_aof = False
        self.durability = "unchecked"
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._executor is not None:
            return
        try:
            self._load_scripts()
            self._check_durability()
        except RedisError as exc:
            raise BackendError(f"the Redis event log is unavailable: {exc}") from exc
        self._executor = ThreadPoolExecutor(APPEND_THREADS, thread_name_prefix="relevo-redis-log")

    def _load_scripts(self) -> None:
        self._shas = {name: str(self._client.script_load(body)) for name, body in SCRIPTS.items()}

    def _check_durability(self) -> None:
        info = self._client.info("server")
        version = tuple(int(part) for part in str(info["redis_version"]).split(".")[:2])
        if version < (7, 0):
            raise BackendError(
                f"the Redis event log needs Redis 7.0 or later (this is {info['redis_version']})"
            )
        try:
            config = self._client.config_get("append*")
        except ResponseError:  # CONFIG renamed away or not allowed to this user
            config = {}
        aof, fsync = config.get("appendonly"), config.get("appendfsync")
        self._wait_aof = (
            self._want_wait_aof and version >= (7, 2) and aof == "yes" and fsync != "always"
        )
        if aof is None:
            self.durability = "unknown"
            log.warning(
                "cannot read the Redis persistence settings (CONFIG is disabled): appends are"
                " durable only if the server runs with appendonly yes and appendfsync always"
            )
        elif aof != "yes":
            self.durability = "none"
            log.warning(
                "Redis runs without the AOF (appendonly no): acknowledged events are lost when"
                " Redis restarts; set appendonly yes and appendfsync always"
            )
        elif fsync == "always" or self._wait_aof:
            self.durability = "fsync"
        else:
            self.durability = f"aof-{fsync}"
            log.warning(
                "Redis runs with appendfsync %s and without WAITAOF (Redis %s): a power cut"
                " loses up to a second or two of acknowledged events; set appendfsync always",
                fsync,
                info["redis_version"],
            )

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._client.close()

    # -- scripts ------------------------------------------------------------------------------

    def _eval(
        self, script: str, keys: Sequence[str], args: Sequence[Any], *, durable: bool = False
    ) -> Any:
        """Run one of ``SCRIPTS`` (reloading them after a restart or ``SCRIPT FLUSH``); when
        ``durable``, also wait for the fsync/replicas the log was set up for, in one round trip."""
        waits = durable and (self._wait_aof or self._replicas > 0)
        try:
            for attempt in range(2):
                try:
                    if not waits:
                        return self._client.evalsha(self._shas[script], len(keys), *keys, *args)
                    with self._client.pipeline(transaction=False) as pipe:
                        pipe.evalsha(self._shas[script], len(keys), *keys, *args)
                        if self._wait_aof:
                            pipe.waitaof(1, self._replicas, self._timeout_ms)
                        else:
                            pipe.wait(self._replicas, self._timeout_ms)
                        reply, acknowledged = pipe.execute()
                    self._check_acknowledged(acknowledged)
                    return reply
                except NoScriptError:
                    if attempt:
                        raise
                    self._load_scripts()
        except RedisError as exc:
            raise BackendError(f"the Redis event log failed: {exc}") from exc

    def _check_acknowledged(self, acknowledged: Any) -> None:
        if self._wait_aof:
            local, replicas = acknowledged
            if local < 1 or replicas < self._replicas:
                raise BackendError(
                    f"Redis did not fsync the batch in time (local {local},"
                    f" replicas {replicas} of {self._replicas})"
                )
        elif acknowledged < self._replicas:
            raise BackendError(
                f"only {acknowledged} of {self._replicas} Redis replicas have the batch"
            )

    # -- writing ------------------------------------------------------------------------------

    async def append(self, items: list[Append]) -> AppendOutcome:
        if not items:
            return AppendOutcome(0, 0, 0)
        with self._pending_lock:
            self._pending += len(items)
        try:
            future = asyncio.get_running_loop().run_in_executor(
                self._running(), self._append, items
            )
            return await asyncio.shield(future)
        finally:
            with self._pending_lock:
                self._pending -= len(items)

    def pending(self) -> int:
        return self._pending

    def _running(self) -> ThreadPoolExecutor:
        if self._executor is None:
            raise BackendError("the Redis event log is not started")
        return self._executor

    def _dedup_key(self, item: Append) -> str:
        return f"{self.prefix}:dedup:{quote(item.source, safe='')}:{item.message_id}"

    def _append(self, items: list[Append]) -> AppendOutcome:
        args: list[Any] = [f"{self.prefix}:p", self._window_ms]
        for item in items:
            dedup = self._dedup_key(item) if item.dedupe else ""
            args.extend((item.partition, dedup, item.key, item.payload))
        flags, *firsts = self._eval("append", (), args, durable=True)
        duplicates = [item for item, flag in zip(items, flags, strict=True) if flag != ord("a")]
        compared = [item for item, flag in zip(items, flags, strict=True) if flag == ord("d")]
        conflicts = sum(
            1
            for item, first in zip(compared, firsts, strict=True)
            if not self._same_payload(first, item.payload)
        )
        return AppendOutcome(len(items) - len(duplicates), len(duplicates), conflicts)

    async def erase_keys(self, keys: list[str]) -> int:
        if not keys:
            return 0
        return await asyncio.get_running_loop().run_in_executor(self._running(), self._erase, keys)

    def _erase(self, keys: list[str]) -> int:
        by_partition: dict[int, list[str]] = {}
        for key in keys:
            by_partition.setdefault(partition_of(key, self.partitions), []).append(key)
        erased = 0
        for partition, wanted in by_partition.items():
            start = "-"
            while True:
                count, scanned, last = self._eval(
                    "erase", (self._streams[partition],), (start, SCAN_CHUNK, *wanted)
                )
                erased += count
                if scanned < SCAN_CHUNK:
                    break
                start = f"({last.decode()}"
        return erased

    # -- reading ------------------------------------------------------------------------------

    def read(self, partition: int, after: int, limit: int) -> list[Record]:
        flat = self._eval("read", (self._streams[partition],), (after, limit))
        return [Record(partition, flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def end_offsets(self) -> dict[int, int]:
        return dict(enumerate(self._eval("ends", self._streams, ())))

    def wait(self, beyond: dict[int, int], timeout: float) -> None:
        streams: dict[Any, Any] = {
            stream: f"0-{beyond[p]}" for p, stream in enumerate(self._streams) if p in beyond
        }
        if not streams:  # nothing to watch (a worker without partitions): just wait
            time.sleep(min(timeout, MAX_BLOCK_SECONDS))
            return
        block = max(1, round(min(timeout, MAX_BLOCK_SECONDS) * 1000)) if timeout > 0 else None
        try:
            self._client.xread(streams, count=1, block=block)
        except RedisError as exc:
            raise BackendError(f"waiting on Redis failed: {exc}") from exc
