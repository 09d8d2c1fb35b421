"""NOOP: does nothing, completed in the decision that reaches it."""

from __future__ import annotations

from .base import Kind
from .checks import no_fields
from .steps import completes_at_once

KIND = Kind(names=("NOOP",), role="system", fields=frozenset(), validate=no_fields, decide=completes_at_once)
