"""Parameters and numbers as a person reads them: the space's own names, 3-4 digits.

A trial's ``params.json`` is flat (``learning_rate: cosine_decay_learning_rate`` and
``cosine_decay_learning_rate.learning_rate_base: 0.013`` side by side); a report shows it
grouped the way the space was written: ``learning_rate cosine(base 0.013, warmup 6)``.
Full proto paths stay in the report's collapsed details and in ``best/pipeline.config``.
"""

from __future__ import annotations

import math
from typing import Any

DIGITS = 3  # significant digits in tables and the verdict

# The OD API's learning-rate words, shortened where they repeat the group's own name.
_OPTION_SUFFIXES = ("_decay_learning_rate", "_learning_rate")
_WORDS = {"learning_rate_base": "base", "warmup_learning_rate": "warmup_lr",
          "warmup_steps": "warmup", "total_steps": "total", "learning_rate": "lr"}


def num(value: Any, digits: int = DIGITS) -> str:
    """A number in ``digits`` significant digits, exponent kept short (``1.23e-4``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        small_or_big = value != 0 and not 1e-3 <= abs(value) < 1e5
        text = f"{value:.{digits - 1}e}" if small_or_big else f"{value:.{digits}g}"
        if "e" in text:
            mant, exp = text.split("e")
            mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
            text = f"{mant}e{int(exp)}"
        return text
    return str(value)


def option_name(value: Any) -> str:
    """``cosine_decay_learning_rate`` -> ``cosine``; other choice values as they are."""
    text = num(value)
    for suffix in _OPTION_SUFFIXES:
        if text.endswith(suffix) and len(text) > len(suffix):
            return text[: -len(suffix)]
    return text


def leaf_name(name: str, prefix: str = "") -> str:
    """A parameter's name inside its group: the group prefix dropped, OD API words shortened;
    a long proto path (``model.ssd.loss.classification_weight``) keeps its last two parts."""
    if prefix and name.startswith(prefix + "."):
        name = name[len(prefix) + 1:]
        return _WORDS.get(name, name)
    parts = name.split(".")
    if len(parts) == 2 and option_name(parts[0]) != parts[0]:  # cosine_decay_..._rate.x
        return f"{option_name(parts[0])}.{_WORDS.get(parts[1], parts[1])}"
    return ".".join(parts[-2:]) if len(parts) > 2 else name


def grouped(params: dict[str, Any]) -> dict[str, str]:
    """``{top-level name: short text}`` in the space's order.

    A parameter whose value names a group (a ``choice`` option whose parameters are spelled
    ``<option>.<field>``) or whose own name prefixes others (an augmentation and its settings)
    is shown with those parameters in parentheses.
    """
    names = [k for k in params if not k.startswith("_")]
    children: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for k in names:
        for prefix in (num(params[k]), k):
            kids = [c for c in names if c != k and c.startswith(prefix + ".") and c not in owner]
            if kids:
                children[k] = kids
                owner.update({c: k for c in kids})
                break
    out: dict[str, str] = {}
    for k in names:
        if k in owner:
            continue
        if k in children:
            prefix = num(params[k]) if children[k][0].startswith(num(params[k]) + ".") else k
            inner = ", ".join(f"{leaf_name(c, prefix)} {num(params[c])}" for c in children[k])
            head = option_name(params[k]) if prefix != k else num(params[k])
            out[leaf_name(k)] = f"{head}({inner})"
        else:
            out[leaf_name(k)] = num(params[k])
    return out


def changed(params: dict[str, Any], base: dict[str, Any]) -> dict[str, str]:
    """The groups of ``params`` that differ from ``base``'s, as :func:`grouped` prints them."""
    mine, theirs = grouped(params), grouped(base)
    return {k: v for k, v in mine.items() if theirs.get(k) != v}


def line(items: dict[str, str]) -> str:
    """``l2_weight 1.2e-4, learning_rate cosine(base 0.013, warmup 6)``."""
    return ", ".join(f"{k} {v}" for k, v in items.items())
