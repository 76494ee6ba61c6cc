"""Immutable JSON values: what a header's extensions hold.

Parsed headers are shared: by every message with the same header bytes, and
(through the decoder's parse cache) by every connection that sends them. So
the nested lists and objects of extensions must not be changeable, or one
handler appending to ``extensions["x"]`` would change it for everyone.

:class:`FrozenList` and :class:`FrozenDict` are ``list`` and ``dict``
subclasses that refuse every mutation: they compare equal to plain lists
and dicts, ``isinstance`` checks and ``json``/``orjson`` serialise them as
usual, and ``copy.copy``/``copy.deepcopy`` give plain, mutable copies.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["FrozenDict", "FrozenList", "freeze", "thaw"]


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(f"{type(self).__name__} is read-only: copy.deepcopy() it to change a copy")


class FrozenList(list[Any]):
    """A list that cannot be changed."""

    __slots__ = ()
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return thaw(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))


class FrozenDict(dict[str, Any]):
    """A dict that cannot be changed."""

    __slots__ = ()
    clear = pop = popitem = setdefault = update = _refuse
    __setitem__ = __delitem__ = __ior__ = _refuse

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return thaw(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


_set_item = dict.__setitem__
_append = list.append


def _convert(value: Any, frozen: bool) -> tuple[Any, bool]:
    """An empty container of the target kind for ``value``, and whether it is one."""
    if isinstance(value, dict):
        return (FrozenDict() if frozen else {}), True
    if isinstance(value, (list, tuple)):
        return (FrozenList() if frozen else []), True
    return value, False


def _copy(value: Any, frozen: bool) -> Any:
    # Iterative, not recursive: a header may nest 1024 deep (the parser's
    # limit), past Python's recursion limit.
    root, container = _convert(value, frozen)
    if not container:
        return value
    stack = [(value, root)]
    while stack:
        source, target = stack.pop()
        if isinstance(source, dict):
            for key, item in source.items():
                copy, nested = _convert(item, frozen)
                _set_item(target, key, copy)
                if nested:
                    stack.append((item, copy))
        else:
            for item in source:
                copy, nested = _convert(item, frozen)
                _append(target, copy)
                if nested:
                    stack.append((item, copy))
    return root


_SCALARS = frozenset({str, int, float, bool, type(None)})


def freeze(value: Any) -> Any:
    """``value`` with every list (or tuple) and dict inside made read-only (a copy)."""
    if type(value) is dict and all(type(item) in _SCALARS for item in value.values()):
        # The usual header's extensions: flat (an id, a flag): one copy, no walk.
        return FrozenDict(value)
    return _copy(value, True)


def thaw(value: Any) -> Any:
    """A plain, mutable copy of ``value`` (lists and dicts all the way down)."""
    return _copy(value, False)
