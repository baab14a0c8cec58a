"""Profile change notices over Redis pub/sub (``RELEVO_CACHE_URL=redis://host:port/db``).

Workers publish the ids each commit changed on one channel; API nodes subscribe from a
background thread and drop those profiles from their decide cache. Pub/sub delivers to whoever
is connected at that moment, so a subscriber that (re)connects first drops its whole cache:
it may have missed notices while it was away.
"""

from __future__ import annotations

import logging
import threading

import msgspec

from relevo.profiles.changes import Listener

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("redis:// needs the Redis driver: pip install 'relevo[redis]'") from exc

log = logging.getLogger(__name__)

CHANNEL = "relevo:profiles:changed"
RECONNECT_SECONDS = 0.5
_ids = msgspec.json.Decoder(list[str])


class RedisChanges:
    def __init__(self, url: str, channel: str = CHANNEL) -> None:
        self._client = redis.Redis.from_url(url)
        self._channel = channel
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()

    def publish(self, profile_ids: list[str]) -> None:
        if profile_ids:
            self._client.publish(self._channel, msgspec.json.encode(profile_ids))

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="relevo-profile-changes", daemon=True
            )
            self._thread.start()

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether the subscription is live (tests; a node serves meanwhile anyway)."""
        return self._connected.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except redis.RedisError:
                log.warning("profile change notices lost their connection; reconnecting")
            self._connected.clear()
            self._stop.wait(RECONNECT_SECONDS)

    def _listen(self) -> None:
        with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:  # type: ignore[no-untyped-call]
            pubsub.subscribe(self._channel)
            self._notify(None)  # notices may have been missed before this point
            self._connected.set()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.2)
                if message is None or message["type"] != "message":
                    continue
                try:
                    ids = _ids.decode(message["data"])
                except msgspec.DecodeError:
                    log.warning("ignored a malformed profile change notice")
                    continue
                self._notify(ids)

    def _notify(self, ids: list[str] | None) -> None:
        for listener in self._listeners:
            listener(ids)
