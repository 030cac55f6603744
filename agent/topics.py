"""The MQTT topic tree of one agent, id validation and wildcard routing of ingest topics.

Everything the agent publishes or listens to for control lives under one root,
``{prefix}/v1/{site}/{gateway}`` (see ``docs/mqtt.md``). Sensor topics are configured
filters (``+`` and ``#`` allowed) mapped to streams. Pure: no broker needed.

>>> tree = TopicTree(prefix="edge", site="plant1", gateway="gw7")
>>> tree.alert("line1")
'edge/v1/plant1/gw7/alert/line1'
>>> tree.command_name("edge/v1/plant1/gw7/cmd/ping")
'ping'
>>> matches("sensors/+/temp", "sensors/a/temp"), matches("sensors/#", "sensors")
(True, True)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

API_VERSION = "v1"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_id(what: str, value: str) -> str:
    """Return ``value`` if it is a valid topic id (``[A-Za-z0-9_-]{1,64}``), else raise."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"{what}: must match [A-Za-z0-9_-]{{1,64}}, got {value!r}")
    return value


def validate_filter(topic_filter: str) -> str:
    """Check an MQTT subscription filter; raise ValueError naming the problem.

    >>> validate_filter("a/#/b")
    Traceback (most recent call last):
    ...
    ValueError: '#' must be the last level, got 'a/#/b'
    """
    if not topic_filter or len(topic_filter.encode()) > 65535:
        raise ValueError("topic filter must be 1..65535 bytes")
    if "\0" in topic_filter:
        raise ValueError("topic filter must not contain NUL")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"'#' must be the last level, got {topic_filter!r}")
        if "+" in level and level != "+":
            raise ValueError(f"'+' must be a whole level, got {topic_filter!r}")
    return topic_filter


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest, including the parent)."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


@dataclass(frozen=True, slots=True)
class TopicTree:
    """Topics of one agent under ``{prefix}/v1/{site}/{gateway}``."""

    prefix: str
    site: str
    gateway: str

    def __post_init__(self) -> None:
        check_id("prefix", self.prefix)
        check_id("site", self.site)
        check_id("gateway", self.gateway)

    @property
    def root(self) -> str:
        return f"{self.prefix}/{API_VERSION}/{self.site}/{self.gateway}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def birth(self) -> str:
        return f"{self.root}/birth"

    @property
    def stats(self) -> str:
        return f"{self.root}/stats"

    @property
    def config_desired(self) -> str:
        return f"{self.root}/config/desired"

    @property
    def config_reported(self) -> str:
        return f"{self.root}/config/reported"

    @property
    def commands(self) -> str:
        """Subscription filter for every command."""
        return f"{self.root}/cmd/+"

    @property
    def model_offer(self) -> str:
        return f"{self.root}/model/offer"

    @property
    def model_chunks(self) -> str:
        """Subscription filter for every model chunk (``model/chunk/{version}/{n}``)."""
        return f"{self.root}/model/chunk/+/+"

    @property
    def model_state(self) -> str:
        return f"{self.root}/model/state"

    def model_chunk(self, version: str, n: int) -> str:
        return f"{self.root}/model/chunk/{version}/{n}"

    def chunk_of(self, topic: str) -> tuple[str, int] | None:
        """``(version, n)`` of a chunk topic, or None when it is not one.

        >>> TopicTree("e", "s", "g").chunk_of("e/v1/s/g/model/chunk/1.2.0/7")
        ('1.2.0', 7)
        """
        head = f"{self.root}/model/chunk/"
        if not topic.startswith(head):
            return None
        version, _, n = topic[len(head):].partition("/")
        return (version, int(n)) if version and n.isdigit() and len(n) <= 9 else None

    def alert(self, stream: str) -> str:
        return f"{self.root}/alert/{check_id('stream', stream)}"

    def command(self, name: str) -> str:
        return f"{self.root}/cmd/{name}"

    def command_response(self, name: str) -> str:
        """Reply topic for MQTT 3.1.1 clients (MQTT 5 clients name their own)."""
        return f"{self.root}/cmd/{name}/res"

    def command_name(self, topic: str) -> str | None:
        """The command a topic addresses, or None when it is not a command topic."""
        head = f"{self.root}/cmd/"
        if not topic.startswith(head):
            return None
        name = topic[len(head):]
        return name if name and "/" not in name else None


@dataclass(frozen=True, slots=True)
class Route:
    """One ingest subscription: a filter, the stream it feeds (None = derive), a format."""

    topic: str
    stream: str | None = None
    format: str = "auto"


class Router:
    """Maps a received topic to the first matching ingest route.

    >>> r = Router([Route("plant/+/line1", "line1"), Route("raw/#")])
    >>> r.route("plant/a/line1").stream, r.route("raw/x/pump").topic, r.route("nope")
    ('line1', 'raw/#', None)
    >>> Router.fallback_stream("raw/x/pump")
    'pump'
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        for route in routes:
            validate_filter(route.topic)
        self.routes = tuple(routes)

    def route(self, topic: str) -> Route | None:
        for r in self.routes:
            if matches(r.topic, topic):
                return r
        return None

    @staticmethod
    def fallback_stream(topic: str) -> str | None:
        """The last topic level when it is a valid id (used when a route names no stream)."""
        last = topic.rsplit("/", 1)[-1]
        return last if _ID.match(last) else None
