"""alexnetc: describe a convolutional network in YAML, compile it, train it (see README.md).

This directory holds only what belongs to the top-level package (``python -m alexnetc``); the
subpackages are mapped from the repository's top-level folders in pyproject.toml.
"""
