"""Package exports loaded on first use (PEP 562), so that importing one light submodule (e.g.
``analysis.twostep.config`` for a command's options) does not import scipy and pandas."""

from __future__ import annotations

import importlib
import sys


def attach(package: str, exports: dict[str, tuple[str, ...]]):
    """``(__getattr__, __dir__, __all__)`` for ``package`` re-exporting ``exports`` (module ->
    names); each name is imported from its module on first access and then kept."""
    home = {name: mod for mod, names in exports.items() for name in names}
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str):
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home[name]), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(home))

    return __getattr__, __dir__, sorted(home)
