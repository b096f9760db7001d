"""The foundation: settings, storage, errors, metrics, the messaging and LLM protocols.

Every other package depends on `core`; `core` depends on none of them.
"""
