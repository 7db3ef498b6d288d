"""A module loaded on its first use rather than at import (the standard library's LazyLoader).

The daemon builds every provider at start; a provider whose library is heavy (asyncssh takes a
quarter of a second of CPU to import) would make every daemon pay for it, on every start, even
one that never opens an SSH connection. Code that uses such a library writes
``asyncssh = lazy_module("asyncssh")`` under ``if not TYPE_CHECKING`` (with the real import for
the type checker) and touches it only inside functions.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name`` as a module whose body runs at its first attribute access (already loaded:
    the module itself)."""
    found = sys.modules.get(name)
    if found is not None:
        return found
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
