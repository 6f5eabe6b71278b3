"""Lazy public names for a package (PEP 562): a name's module is imported the first time the name is used, so that
``import radiodiff_vae`` stays cheap and heavy optional parts (LPIPS, datasets) load only when needed."""

import importlib
import sys
from typing import Any, Callable, Dict, List, Tuple


def lazy_exports(package: str, exports: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``, for ``exports`` = {name: module path}."""
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> List[str]:
        return names

    return __getattr__, __dir__
