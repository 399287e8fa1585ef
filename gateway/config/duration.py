"""Gateway API Duration (GEP-2257): ``1h``, ``500ms``, ``1m30s``; ``0s`` means disabled."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}$")
_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Seconds in a GEP-2257 duration; raises ValueError naming the expected syntax."""
    if not _DURATION.match(text):
        raise ValueError(f"invalid duration {text!r}: expected e.g. '500ms', '10s', '1m30s'")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
