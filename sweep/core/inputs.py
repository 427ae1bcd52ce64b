"""Reading the files a user hands us, with limits: text only, bounded size, bounded YAML.

A search space, a pipeline.config or a label map is a few KB. A file that is binary, huge, or a
YAML whose anchors expand into millions of nodes ("billion laughs") is refused with a
``Problem`` before anything parses it into memory, and a value quoted into a message is
truncated (``short``), so a 1 KB file can neither exhaust memory nor print a 300 MB error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sweep.core.errors import Problem

MAX_BYTES = 1 << 20  # 1 MiB: a search space or pipeline.config is a few KB
MAX_NODES = 100_000  # values in a loaded YAML, aliases counted each time they are used
MAX_SHOWN = 80  # characters of a value quoted in a message


class InputError(ValueError):
    """A user file that cannot be read as input; carries the ``Problem`` to report."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


def short(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` cut to ``limit`` characters, without building a huge string first."""
    text = _bounded_repr(value, limit + 1)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded_repr(value: Any, limit: int) -> str:
    # repr() of a shared-alias structure can be gigabytes; stop as soon as `limit` is reached.
    if isinstance(value, dict):
        parts, size = [], 2
        for k, v in value.items():
            if size > limit:
                parts.append("...")
                break
            part = f"{_bounded_repr(k, limit)}: {_bounded_repr(v, limit - size)}"
            parts.append(part)
            size += len(part) + 2
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list | tuple):
        parts, size = [], 2
        for v in value:
            if size > limit:
                parts.append("...")
                break
            part = _bounded_repr(v, limit - size)
            parts.append(part)
            size += len(part) + 2
        return "[" + ", ".join(parts) + "]"
    return repr(value)[: max(limit, 0) + 1]


def read_text(path: Path, what: str, fix: str) -> str:
    """The text of a user file: ``InputError`` if unreadable, larger than MAX_BYTES, or binary."""
    file = str(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise InputError(Problem(file, "", f"cannot read {what} ({e.strerror})", fix)) from e
    if len(data) > MAX_BYTES:
        raise InputError(Problem(file, "", f"{what} is larger than {MAX_BYTES >> 20} MiB; "
                                 "it cannot be one", fix))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(Problem(file, f"byte {e.start}", f"{what} is not UTF-8 text "
                                 "(a binary file?)", fix)) from e


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses the same key twice in one mapping (YAML says keys are unique;
    PyYAML silently keeps the last one, so a second ``learning_rate:`` would hide the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable key: construct_mapping below reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found the key {short(key)} twice (first at line {first.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path, what: str, fix: str) -> Any:
    """Parse a YAML user file with the limits above; ``InputError`` naming line and column."""
    text = read_text(path, what, fix)
    file = str(path)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        fix_yaml = ("give each key once in its mapping" if "twice" in problem
                    else "fix the YAML syntax (indentation, colons, quotes)")
        raise InputError(Problem(file, where, f"invalid YAML: {problem[:200]}",
                                 fix_yaml)) from e
    except RecursionError as e:
        raise InputError(Problem(file, "", "the YAML is nested too deeply",
                                 "a search space is a few levels deep; flatten it")) from e
    if count_nodes(data, MAX_NODES) > MAX_NODES:
        raise InputError(Problem(file, "", f"the YAML expands to more than {MAX_NODES} values "
                                 "(anchors and aliases are counted each time they are used)",
                                 "write the values out; a search space needs no aliases"))
    return data


def count_nodes(data: Any, limit: int) -> int:
    """Values in ``data`` counting shared (aliased) ones at each use; stops past ``limit``."""
    count, stack = 0, [data]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return count
