"""Secret and key files: read them, and warn when their permissions are too loose.

A key file (HMAC secret, TLS private key) or a config file holding ``mqtt.password``
that group or others can read (``mode & 0o077``) is logged at warning level, naming the
file and the mode, never the content. Secrets themselves are never logged anywhere.

>>> import os, tempfile
>>> fd, name = tempfile.mkstemp()
>>> _ = os.write(fd, b"0123456789abcdef0123456789abcdef"); os.close(fd)
>>> len(read_secret(name, "control.hmac_keys[0].file"))
32
>>> os.chmod(name, 0o644); loose(name)
True
>>> os.unlink(name)
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

log = logging.getLogger(__name__)

MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 4096


def loose(path: str | Path) -> bool:
    """True when group or others may read, write or execute ``path``."""
    try:
        return bool(os.stat(path).st_mode & 0o077)
    except OSError:
        return False


def warn_if_loose(path: str | Path, what: str) -> bool:
    if loose(path):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        log.warning("%s: %s is readable by others (mode %04o); run chmod 600 %s", what, path,
                    mode, path)
        return True
    return False


def read_secret(path: str | Path, key: str) -> bytes:
    """An HMAC secret: the file's bytes without surrounding whitespace (16..4096 bytes)."""
    try:
        data = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read secret file {path}: {exc.strerror}") from None
    if not MIN_SECRET_BYTES <= len(data) <= MAX_SECRET_BYTES:
        raise ConfigError(key, f"secret file {path} must hold {MIN_SECRET_BYTES}.."
                               f"{MAX_SECRET_BYTES} bytes, has {len(data)}")
    warn_if_loose(path, key)
    return data


def audit_secrets(cfg: Any, config_path: str | Path | None) -> list[str]:
    """Warn about loose permissions on the files that hold the agent's secrets; return
    the files warned about (HMAC files are checked when they are read)."""
    warned = []
    tls = cfg.mqtt.tls
    if tls.enabled and tls.key_file:
        p = cfg.resolve_path(tls.key_file)
        if warn_if_loose(p, "mqtt.tls.key_file"):
            warned.append(str(p))
    if cfg.mqtt.password is not None and config_path and warn_if_loose(
            config_path, "config file with mqtt.password"):
        warned.append(str(config_path))
    return warned
