"""The exception tree of `knowledge`."""

from __future__ import annotations

from core.errors import KBError


class KnowledgeError(KBError):
    """Something in the knowledge base went wrong."""


class LoadError(KnowledgeError):
    """A source document could not be read; the ingest reports it and goes on."""


class VectorIndexError(KnowledgeError):
    """The vector index is missing, corrupt or does not fit the embedding model."""
