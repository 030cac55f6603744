"""Masking of the variable fields of a log message before template mining.

One regular expression with an alternative per kind, tried left to right at each
position, so a timestamp is not read as numbers and an IPv4 address with a port is one
field. Each match becomes a typed placeholder (``<IP>``, ``<NUM>`` ...): two lines that
differ only in such fields get the same tokens, and the template keeps the kind of field.
Ambiguous candidates (IPv6, bare hex) are validated in Python and left alone otherwise.

>>> mask("conn 10.0.0.7:5020 closed after 12ms, sent 4.5KiB to /var/lib/x.db")
'conn <IP> closed after <DUR>, sent <SIZE> to <PATH>'
>>> mask("job 3f2b1c9e-0c1d-4e5f-8a9b-0123456789ab exit=-1 at 2024-01-02T03:04:05Z")
'job <UUID> exit=<NUM> at <TS>'
>>> mask("fe80::1ff:fe23:4567:890a reachable, id 0x7fa3, blk deadbeef42")
'<IP> reachable, id <HEX>, blk <HEX>'
"""

from __future__ import annotations

import ipaddress
import re

MASK_VERSION = 1  # bump when the rules change: saved templates no longer fit
PLACEHOLDERS = ("<TS>", "<UUID>", "<URL>", "<IP>", "<PATH>", "<HEX>", "<DUR>", "<SIZE>", "<NUM>")

_HEXD = "[0-9A-Fa-f]"
_PATTERN = re.compile(
    r"""
    (?P<TS>
        \d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)?
      | (?<![\d:])\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?![\d:])
    )
  | (?P<UUID>(?<![\w-])%H{8}-%H{4}-%H{4}-%H{4}-%H{12}(?![\w-]))
  | (?P<URL>\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s"'<>]+)
  | (?P<IP4>(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\w.]|\.\d))
  | (?P<MAC>(?<![\w:-])%H{2}(?:[:-]%H{2}){5}(?![\w:-]))
  | (?P<IP6>(?<![\w:.])\[?(?:%H{0,4}:){2,7}%H{0,4}(?:%\w+)?\]?(?::\d{1,5})?(?![\w:.]))
  | (?P<PATH>
        (?<![\w/.~])(?:~|\.{1,2})?(?:/[\w.@+~-]+){2,}/?
      | (?<![\w/])[A-Za-z]:\\[\w.\\-]*[\w.]
    )
  | (?P<HEX>(?<![\w-])(?:0[xX]%H+|%H{8,})(?![\w-]))
  | (?P<DUR>(?<![\w.])\d+(?:\.\d+)?(?:ns|us|µs|ms|s|sec|secs|min|mins|h|hrs?)(?!\w))
  | (?P<SIZE>(?<![\w.])\d+(?:\.\d+)?(?:[KMGTP]i?B|kB|B|bytes)(?!\w))
  | (?P<NUM>(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?(?!\w|\.\d))
    """.replace("%H", _HEXD),
    re.VERBOSE,
)


def _ip6(text: str) -> bool:
    core = text.strip("[]").split("%", 1)[0]
    if core.count(":") < 2:
        return False
    if "]:" in text:
        core = text[1:text.index("]")].split("%", 1)[0]
    try:
        ipaddress.IPv6Address(core)
    except ValueError:
        return False
    return True


def _replace(m: re.Match[str]) -> str:
    kind = m.lastgroup
    text = m.group(0)
    if kind == "IP4":
        return "<IP>" if all(int(o) < 256 for o in text.split(":", 1)[0].split(".")) else text
    if kind == "IP6":
        return "<IP>" if _ip6(text) else text
    if kind == "MAC":
        return "<HEX>"
    if kind == "HEX":
        # a bare run of 8+ hex digits is an id only if it mixes digits and letters
        if text[:2] in ("0x", "0X") or (any(c.isdigit() for c in text)
                                         and any(c.isalpha() for c in text)):
            return "<HEX>"
        return text if not text.isdigit() else "<NUM>"
    return f"<{kind}>"


_CANDIDATE = re.compile(r"[\d/\\:]")
_LEAD = "([{<\"'"
_TRAIL = ",;.:)]}>\"'!?"


def _field(text: str) -> str | None:
    """The placeholder when all of ``text`` is one field, else None."""
    m = _PATTERN.fullmatch(text)
    if m is None:
        return None
    rep = _replace(m)
    return rep if rep != text else None


def _mask_token(tok: str) -> str:
    rep = _field(tok)
    if rep is not None:
        return rep
    core = tok.strip(_TRAIL).lstrip(_LEAD)
    if core:
        key, eq, value = "", "", core
        rep = _field(core) if core != tok else None
        if rep is None and "=" in core:  # key=value: the value alone is the field
            key, eq, value = core.rpartition("=")
            rep = _field(value) if value else None
        if rep is not None:
            i = tok.index(core)
            return tok[:i] + key + eq + rep + tok[i + len(core):]
    return _PATTERN.sub(_replace, tok)


def mask_tokens(message: str) -> list[str]:
    """The whitespace tokens of ``message``, variable fields replaced by placeholders.

    Tokens without a digit, slash, backslash or colon are words and kept as they are.
    """
    return [_mask_token(t) if _CANDIDATE.search(t) else t for t in message.split()]


def mask(message: str) -> str:
    """``message`` (whitespace normalised) with every variable field replaced."""
    return " ".join(mask_tokens(message))
