"""Push's fixtures (a library of documents, people's behaviour) for the push commands and `kb serve`."""

from tests.push.conftest import behaviour, library

__all__ = ["behaviour", "library"]
