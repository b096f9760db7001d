"""Core of the knowledge assistant: settings, storage, errors and the `kb` command line.

Every other package depends on `core`; `core` depends on none of them (the `kb` entry point
imports them lazily, inside its commands, because it is where they are wired together).
"""
