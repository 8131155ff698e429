"""The data layer's error type, in a module of its own so that every data module (the datasets, the
pack reader) can raise it without importing the others."""
from __future__ import annotations


class DatasetError(Exception):
    """A dataset path or file is missing or malformed; the message names the path at fault."""
