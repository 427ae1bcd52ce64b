"""OD API label maps (``label_map.pbtxt``): the one place they are parsed and written.

A label map is a ``StringIntLabelMap`` text proto, one ``item { id: N name: '...' }`` per
class, ids from 1 (0 is the background), each id once. ``sweep data`` writes them,
``sweep init`` and ``sweep data inspect`` read them, ``sweep validate`` checks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format

from sweep.core.errors import ConfigError, Problem


def parse_label_map(text: str, where: str) -> tuple[dict[str, int], list[int], list[Problem]]:
    """``({name: id}, every id in file order, problems)`` of a label map's text; ``where``
    names the file in the problems (not a label map, no entries, ids below 1, duplicates)."""
    from object_detection.protos import string_int_label_map_pb2

    label_map = string_int_label_map_pb2.StringIntLabelMap()
    try:
        text_format.Parse(text, label_map)
    except text_format.ParseError as e:
        return {}, [], [Problem(where, f"line {e.GetLine()}", f"not a label map: {e}",
                                "write entries as `item { id: 1 name: 'cat' }`")]
    ids = [item.id for item in label_map.item]
    problems = []
    if not ids:
        problems.append(Problem(where, "item", "the label map has no entries",
                                "add one `item { id: N name: '...' }` per class"))
    elif min(ids) < 1:
        problems.append(Problem(where, "item.id", f"id {min(ids)} found; ids start at 1 "
                                "(0 is the background)", "number the classes 1, 2, ..."))
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        problems.append(Problem(where, "item.id", f"duplicate ids {dupes}",
                                "give each class its own id"))
    return {item.name: item.id for item in label_map.item}, ids, problems


def read_label_map(path: Path) -> dict[str, int]:
    """``{name: id}`` of an OD API label map file; ``ConfigError`` naming the file otherwise."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(Problem(str(path), "", f"cannot read the label map ({e.strerror})",
                                  "pass an existing label_map.pbtxt")) from e
    names, _, problems = parse_label_map(text, str(path))
    if problems:
        raise ConfigError(problems)
    return names


def label_map_text(class_names: Sequence[str]) -> str:
    """The label map as the OD API's ``StringIntLabelMap`` text proto (ids from 1)."""
    from object_detection.protos import string_int_label_map_pb2

    label_map = string_int_label_map_pb2.StringIntLabelMap()
    for i, name in enumerate(class_names, start=1):
        label_map.item.add(id=i, name=name, display_name=name)
    return text_format.MessageToString(label_map)
