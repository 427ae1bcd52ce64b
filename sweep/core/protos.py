"""The OD API's protobuf modules on protobuf's fast backend (upb).

``tf-models-research-object-detection`` ships ``*_pb2.py`` files made by an old protoc: each
builds its descriptors one by one (``_descriptor.FileDescriptor(serialized_pb=...)``), which
protobuf >= 4 refuses ("Descriptors cannot be created directly") unless its pure-Python backend
is chosen. That backend made every protobuf TensorFlow handles in Python slow: an ``AttrValue``
per op attribute while tracing, SavedModel saving, the TFLite converter, event files, config
parsing. Each old file holds its ``.proto`` as a serialized ``FileDescriptorProto``, which is all
a module made by a current protoc needs: ``install()`` has them loaded that way (protobuf's
``builder``, as protoc >= 3.20 writes), so the OD API's messages are upb's like TensorFlow's.

Installed by ``sweep/__init__.py``: any process that imports ``sweep`` (the CLI, the train and
eval jobs, the tests) loads the OD API's protos this way.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

PACKAGES = ("object_detection.protos.",)  # old-style _pb2 modules loaded from their descriptor


class _FromDescriptor(importlib.abc.Loader):
    """Runs an old-style ``_pb2`` file's imports of other ``_pb2`` modules, then builds its
    messages and enums from the serialized descriptor it holds."""

    def __init__(self, path: str) -> None:
        self.path = path

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: ModuleType) -> None:
        from google.protobuf import descriptor_pool
        from google.protobuf.internal import builder

        with open(self.path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), self.path)
        serialized, imports = None, []
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom) and not (
                    getattr(node, "module", None) or "").startswith("google.protobuf"):
                imports.append(node)  # the protos this one depends on: registered first
            for sub in ast.walk(node):
                if serialized is None and isinstance(sub, ast.keyword) and \
                        sub.arg == "serialized_pb":
                    serialized = ast.literal_eval(sub.value)
        if not isinstance(serialized, bytes):
            raise ImportError(f"{self.path}: no serialized_pb=b'...' in this _pb2 module",
                              name=module.__name__, path=self.path)
        namespace = module.__dict__
        exec(compile(ast.Module(imports, []), self.path, "exec"), namespace)  # noqa: S102
        descriptor = descriptor_pool.Default().AddSerializedFile(serialized)
        namespace["DESCRIPTOR"] = descriptor
        builder.BuildMessageAndEnumDescriptors(descriptor, namespace)
        builder.BuildTopDescriptorsAndMessages(descriptor, module.__name__, namespace)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not (name.endswith("_pb2") and name.startswith(PACKAGES)):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return spec
        with open(spec.origin, encoding="utf-8") as f:
            if "_descriptor.FileDescriptor(" not in f.read():
                return spec  # already a current protoc's module
        return importlib.util.spec_from_file_location(name, spec.origin,
                                                      loader=_FromDescriptor(spec.origin))


def install() -> None:
    """Load the OD API's old-style ``_pb2`` modules from their descriptors (idempotent; a
    no-op on protobuf's pure-Python backend, which takes them as they are)."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    try:
        from google.protobuf.internal import api_implementation
    except ImportError:  # no protobuf: nothing to load
        return
    if api_implementation.Type() == "python":
        return
    sys.meta_path.insert(0, _Finder())
