"""The control plane, pure parts: commands and ``config/desired`` (validate, then apply).

Commands arrive on ``cmd/{name}`` with an optional JSON body (``{"id": ..., "args": {...}}``)
and are answered on the MQTT 5 response topic (with the correlation data) or, on 3.1.1,
on ``cmd/{name}/res``. :func:`dispatch` turns a :class:`Command` into a reply dict by
calling a :class:`CommandTarget` (the runtime); it never raises: unknown commands, bad
arguments and failing handlers become error replies (codes 400/403/404/500).

``config/desired`` carries a (partial) config document with a ``version``. It is merged
onto the current overlay, the result onto the base config file, and the whole is
validated (:func:`evaluate_desired`). Only sections that can change live may differ;
everything else (connection, serial ports, store, control, checkpoint, sinks, agent id) needs a
restart and is refused, so a bad push can never cut the agent off its broker.

>>> out = evaluate_desired({}, {}, b'{"version": "2", "alerts": {"k": 9}}', config_from_dict({}))
>>> out.code, out.error
(400, 'alerts.k: must be in 1..n (5), got 9')
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from agent.config import AgentConfig, config_from_dict
from agent.config_live import COMMANDS
from agent.errors import AgentError, ConfigError
from agent.jsonsafe import loads as loads_json
from agent.model_kind import KINDS

log = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error")
_FIXED_SECTIONS = ("store", "control", "metrics", "checkpoint", "sinks", "serial", "models",
                   "events")


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    request_id: Any = None
    args: Mapping[str, Any] = field(default_factory=dict)
    response_topic: str | None = None
    correlation: bytes | None = None
    error: str | None = None


def parse_command(name: str, payload: bytes, response_topic: str | None = None,
                  correlation: bytes | None = None) -> Command:
    """Parse a command body; an empty body means no arguments."""
    base = Command(name=name, response_topic=response_topic, correlation=correlation)
    if not payload.strip():
        return base
    try:
        body = loads_json(payload)
    except ValueError:
        return replace(base, error="body is not valid JSON")
    if not isinstance(body, dict):
        return replace(base, error="body must be a JSON object")
    args = body.get("args", {})
    if not isinstance(args, dict):
        return replace(base, request_id=body.get("id"), error="'args' must be an object")
    return replace(base, request_id=body.get("id"), args=args)


class CommandTarget(Protocol):
    """What the runtime offers the control plane; each returns a JSON-able result."""

    def cmd_ping(self) -> dict[str, Any]: ...
    def cmd_rebirth(self) -> dict[str, Any]: ...
    def cmd_rebaseline(self, stream: str | None) -> dict[str, Any]: ...
    def cmd_reload(self) -> dict[str, Any]: ...
    def cmd_set_log_level(self, level: str) -> dict[str, Any]: ...
    def cmd_flush(self, timeout_s: float) -> dict[str, Any]: ...
    def cmd_stats_now(self) -> dict[str, Any]: ...
    def cmd_checkpoint(self) -> dict[str, Any]: ...
    def cmd_model_rollback(self, kind: str | None) -> dict[str, Any]: ...


class CommandError(AgentError):
    """A command that cannot be carried out; ``code`` is the reply code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _call(target: CommandTarget, cmd: Command, streams: tuple[str, ...]) -> dict[str, Any]:
    a = cmd.args
    if cmd.name == "rebaseline":
        stream = a.get("stream")
        if stream is not None and stream not in streams:
            raise CommandError(404, f"unknown stream {stream!r} (streams: {list(streams)})")
        return target.cmd_rebaseline(stream)
    if cmd.name == "set_log_level":
        level = a.get("level")
        if level not in LOG_LEVELS:
            raise CommandError(400, f"args.level must be one of {list(LOG_LEVELS)}")
        return target.cmd_set_log_level(level)
    if cmd.name == "flush":
        timeout = a.get("timeout_s", 10.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (
                0 < timeout <= 300):
            raise CommandError(400, "args.timeout_s must be a number in (0, 300]")
        return target.cmd_flush(float(timeout))
    if cmd.name == "model_rollback":
        kind = a.get("kind")
        if kind is not None and kind not in KINDS:
            raise CommandError(400, f"args.kind must be one of {list(KINDS)}")
        return target.cmd_model_rollback(kind)
    handler = getattr(target, f"cmd_{cmd.name}")
    result: dict[str, Any] = handler()
    return result


def dispatch(target: CommandTarget, cmd: Command, allowed: tuple[str, ...],
             streams: tuple[str, ...]) -> dict[str, Any]:
    """Run a command; return the reply body ``{cmd, id, code, result | error}``."""
    reply: dict[str, Any] = {"cmd": cmd.name, "id": cmd.request_id}
    try:
        if cmd.error is not None:
            raise CommandError(400, cmd.error)
        if cmd.name not in COMMANDS:
            raise CommandError(404, f"unknown command {cmd.name!r} (known: {list(COMMANDS)})")
        if cmd.name not in allowed:
            raise CommandError(403, f"command {cmd.name!r} is disabled by control.commands")
        reply["result"] = _call(target, cmd, streams)
        reply["code"] = 200
    except CommandError as exc:
        reply.update(code=exc.code, error=str(exc))
    except Exception as exc:  # the command boundary: a failing handler must not kill the agent
        log.exception("command %s failed", cmd.name)
        reply.update(code=500, error=f"{type(exc).__name__}: {exc}")
    return reply


# --------------------------------------------------------------------------- config/desired


def merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``patch`` onto ``base`` (mappings merge, everything else replaces).

    >>> merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3}, "l": [2]})
    {'a': {'b': 1, 'c': 3}, 'l': [2]}
    """
    out = copy.deepcopy(dict(base))
    for k, v in patch.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class DesiredOutcome:
    """Result of evaluating one ``config/desired`` message."""

    version: str | None
    code: int
    error: str | None = None
    config: AgentConfig | None = None
    overlay: dict[str, Any] | None = None
    unchanged: bool = False

    def reported(self) -> dict[str, Any]:
        return {"version": self.version, "code": self.code, "error": self.error}


def restart_only_changes(old: AgentConfig, new: AgentConfig) -> list[str]:
    """Keys that differ between two configs but cannot be applied live."""
    bad = [s for s in _FIXED_SECTIONS if getattr(old, s) != getattr(new, s)]
    if replace(old.mqtt, ingest=()) != replace(new.mqtt, ingest=()):
        bad.append("mqtt (except mqtt.ingest)")
    if old.agent.id != new.agent.id:
        bad.append("agent.id")
    return bad


def evaluate_desired(base_doc: Mapping[str, Any], overlay: Mapping[str, Any], payload: bytes,
                     current: AgentConfig, source: str | None = None) -> DesiredOutcome:
    """Validate a desired config against the current one; never raises."""
    try:
        patch = loads_json(payload)
    except ValueError:
        return DesiredOutcome(None, 400, "payload is not valid JSON")
    if not isinstance(patch, dict):
        return DesiredOutcome(None, 400, "payload must be a JSON object")
    version = patch.get("version")
    if isinstance(version, bool) or not isinstance(version, str | int) or version == "":
        return DesiredOutcome(None, 400, "'version' (string or integer) is required")
    version = str(version)
    new_overlay = merge(overlay, patch)
    try:
        cfg = config_from_dict(merge(base_doc, new_overlay), source)
    except ConfigError as exc:
        return DesiredOutcome(version, 400, f"{exc.key}: {exc.reason}")
    fixed = restart_only_changes(current, cfg)
    if fixed:
        return DesiredOutcome(version, 400, f"cannot change live (restart needed): "
                                            f"{', '.join(fixed)}")
    unchanged = cfg == current and version == current.version
    return DesiredOutcome(version, 200, None, cfg, new_overlay, unchanged)
