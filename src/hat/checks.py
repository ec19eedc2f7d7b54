"""The bottom layer of configuration: the error every bad setting raises, and the checks of one value
(type and range) that name the field, the value and what is allowed. Imports nothing of hat."""

from __future__ import annotations

import math


def to_plain(node):
    """A config node as plain Python containers (lists and dicts), resolving interpolations."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field, the value and what is allowed."""


def require_int(field: str, value, minimum: int, *, maximum: int | None = None, why: str = "",
                optional: bool = False) -> int | None:
    """``value`` if it is an integer in ``minimum..maximum`` (not a bool, not a float; ``None`` when
    ``optional``), else a :class:`ConfigError` naming ``field``, the value, what is allowed and ``why``."""
    if optional and value is None:
        return None
    if not (_is_int(value) and _in_range(value, minimum, False, maximum)):
        raise ConfigError(_allowed(field, value, f"an integer {_bounds(minimum, False, maximum)}", why, optional))
    return value


def require_number(field: str, value, minimum: float, *, exclusive: bool = False, maximum: float | None = None,
                   why: str = "", optional: bool = False) -> float | None:
    """``value`` if it is a finite int or float >= ``minimum`` (> with ``exclusive``) and <= ``maximum``
    (not a bool; ``None`` when ``optional``), else a :class:`ConfigError` naming ``field``."""
    if optional and value is None:
        return None
    number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not (number and _in_range(value, minimum, exclusive, maximum)):
        allowed = f"a finite number {_bounds(minimum, exclusive, maximum)}"
        raise ConfigError(_allowed(field, value, allowed, why, optional))
    return value


def require_int_list(field: str, value, minimum: int = 1, *, maximum: int | None = None, what: str = "",
                     optional: bool = False) -> list[int] | None:
    """``value`` as a plain list if it is a non-empty list of distinct integers in ``minimum..maximum``
    (``None`` when ``optional``), else a :class:`ConfigError` naming ``field``; ``what`` says what
    ``maximum`` counts."""
    if optional and value is None:
        return None
    items = to_plain(value)
    if not (isinstance(items, list) and items):
        allowed = f"a non-empty list of distinct integers {_bounds(minimum, False, maximum)}"
        raise ConfigError(_allowed(field, items, allowed, what, optional))
    for item in items:
        if not (_is_int(item) and _in_range(item, minimum, False, maximum)):
            where = f"not an integer >= {minimum}" if maximum is None else f"outside {minimum}..{maximum}"
            raise ConfigError(f"{field}={show(items)}: {show(item)} is {where}" + (f", the {what}" if what else ""))
    if len(set(items)) != len(items):
        raise ConfigError(f"{field}={show(items)} must be distinct")
    return items


def _is_int(value) -> bool:
    """An int that is not a bool (``True`` is an ``int`` in Python, but ``train.epochs=true`` is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(value, minimum, exclusive: bool, maximum) -> bool:
    """``value`` >= ``minimum`` (> with ``exclusive``) and <= ``maximum`` (when not None)."""
    above = value > minimum if exclusive else value >= minimum
    return above and (maximum is None or value <= maximum)


def _bounds(minimum, exclusive: bool, maximum) -> str:
    """The range :func:`_in_range` allows, as a message writes it: ``>= 1``, ``> 0 and <= 1``."""
    return f"{'>' if exclusive else '>='} {minimum}" + ("" if maximum is None else f" and <= {maximum}")


def _allowed(field: str, value, allowed: str, why: str, optional: bool) -> str:
    """The message ``FIELD=VALUE must be ALLOWED[ or null][ (WHY)]``."""
    return f"{field}={show(value)} must be {allowed}" + (" or null" if optional else "") + (f" ({why})" if why else "")


def show(value) -> str:
    """``value`` as the command line writes it: null, true/false, [1, 2], and 'text', numbers as Python prints them."""
    value = to_plain(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(show, value)) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)
