"""Routable tokens, exactly as GitLab's Rails mints them and its router reads them.

    tokens.decode("EL25d_AKXDUtqLnIQHEpkG86MQM.01.0r1ajj2i3")   # {'o': 1}
    tokens.encode({"c": 2, "o": 1}, prefix="glrt-")               # random bytes from the OS
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

from . import _cellroute


def decode(token: str) -> Dict[str, int]:
    """The token's routing fields. Raises InvalidError when the token is not routable."""
    return _cellroute.token_decode(token)


def encode(fields: Mapping[str, int], prefix: str = "", random: Optional[bytes] = None) -> str:
    """A routable token for `fields`; `random` (16 bytes) makes it reproducible."""
    return _cellroute.token_encode(list(fields.items()), prefix, random)
