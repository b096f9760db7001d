"""The application layer: the `kb` command line and the assembly of `kb serve`.

It is the only package that imports the side packages (`bot`, `push`, `training`) together: it
parses, wires and calls down. Nothing imports `app`.
"""
