"""Why an import was refused or failed: each error says what to do instead.

All are ValueErrors (a bad request, not a crash): the CLI prints them, the API turns the
ones it can check up front into 4xx, and an import job reports them as its error.
"""

from __future__ import annotations


class SourceError(ValueError):
    """A model source that cannot be imported."""


class UnknownSchemeError(SourceError):
    """The source names a scheme the store does not read."""


class SourceNotAllowed(SourceError):
    """Over REST, the source lies outside the configured allow-lists (COMPRESSOR_MODEL_SOURCES)."""


class UnsafeSourceError(SourceError):
    """Pickle weights, custom code (`auto_map`), or a file that is not what it claims to be."""


class UnsupportedModelError(SourceError):
    """The config names an architecture the library cannot compress (or a mixture of experts)."""


class SourceTooLarge(SourceError):
    """The weights exceed the configured size limit."""


class SourceUnavailable(SourceError):
    """The hub or bucket cannot be reached, or the source does not exist there."""
