"""Frozen dataclasses that are quick to build.

A replay builds several frozen values per event (the stored event, the facts
it states, the resolver's views and answer). The `__init__` that
`dataclass(frozen=True)` writes sets each field through
`object.__setattr__`, one call per field, which makes a 16-field value four
times as slow to build as a plain one. :func:`quick_init` swaps in an
`__init__` that fills the instance's dictionary at once: same parameters,
same defaults, same frozen `__setattr__` afterwards, about twice as fast.
"""

from __future__ import annotations

from dataclasses import MISSING, fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Give the frozen dataclass `cls` an `__init__` that writes its `__dict__` in one step.

    Apply it above `@dataclass(frozen=True)`. Only plain fields are supported (positional
    or keyword, with or without a default): anything else raises TypeError here, at import.
    """
    if not is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} is not a frozen dataclass")
    if "__slots__" in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has slots or __post_init__")
    namespace: dict[str, Any] = {}
    params: list[str] = []
    for f in fields(cls):
        if not f.init or f.kw_only or f.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{f.name} is not a plain field")
        if f.default is MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    values = ", ".join(f"{f.name!r}: {f.name}" for f in fields(cls))
    source = f"def __init__(self, {', '.join(params)}):\n    self.__dict__.update({{{values}}})\n"
    exec(source, namespace)  # noqa: S102 - the text is built from the class's own field names
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
