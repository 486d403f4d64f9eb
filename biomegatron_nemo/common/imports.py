"""Acting on a library right after it is imported, without importing it (a command that never
needs it must not pay for it): :func:`after_import`. Used to register this library with NeMo and
to tame the logging of libraries that configure it when imported."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Callable, Dict


class AfterImport(importlib.abc.MetaPathFinder):
    """Runs its callbacks right after the module ``name`` is first imported (a meta-path finder that
    steps aside once it has wrapped that module's loader)."""

    def __init__(self, name: str):
        self.name = name
        self.callbacks: Dict[str, Callable[[], None]] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                for callback in self.callbacks.values():
                    callback()

            spec.loader.exec_module = exec_module
        return spec


def after_import(name: str, key: str, then: Callable[[], None]) -> None:
    """``then()`` now if module ``name`` is imported, else right after its import. A later call
    with the same ``key`` replaces the earlier one's ``then``."""
    if name in sys.modules:
        then()
        return
    finder = next((f for f in sys.meta_path if isinstance(f, AfterImport) and f.name == name), None)
    if finder is None:
        finder = AfterImport(name)
        sys.meta_path.insert(0, finder)
    finder.callbacks[key] = then
