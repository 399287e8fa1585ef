"""Compile: validated resources -> the immutable snapshot the data path reads.

Importing this package registers the core ``""/Service`` backend kind.
"""

import gateway.backends.service  # noqa: F401  (registers the Service backend kind)
from gateway.compile.compiler import compile_snapshot
from gateway.compile.status import format_status

__all__ = ["compile_snapshot", "format_status"]
