"""Reading ``torch.distributed.checkpoint`` files without running code a file can control.

DCP's ``FileSystemReader`` reads ``.metadata`` with plain ``pickle.load``, and its default
planner reads every non-tensor value (an optimizer's ``lr``, ``betas``...) with
``torch.load(weights_only=False)``: a results directory copied from someone else could run
anything on resume. Here the metadata is unpickled by an allow-list of the classes DCP's
metadata is made of (dataclasses, ``torch.Size``, dtypes, paths: none runs code when built),
and non-tensor values by ``torch.load(weights_only=True)``. The file format is DCP's own, so
checkpoints stay readable by DCP's tools, and ours read checkpoints written before this.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

_METADATA = "torch.distributed.checkpoint.metadata"
ALLOWED = {
    (_METADATA, name) for name in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata",
                                   "ChunkStorageMetadata", "TensorProperties", "MetadataIndex",
                                   "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
     ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
     ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
     ("pathlib", "PureWindowsPath")}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file asks to build something that is not checkpoint metadata."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpointError(f"refers to {module}.{name}, which is not checkpoint metadata")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError("holds a persistent reference, which checkpoint metadata never does")


def load_metadata(data: bytes) -> Metadata:
    """DCP metadata from the bytes of a ``.metadata`` file, building only allowed classes."""
    metadata = _MetadataUnpickler(io.BytesIO(data)).load()
    if not isinstance(metadata, Metadata):
        raise UnsafeCheckpointError(f"holds a {type(metadata).__name__}, not checkpoint metadata")
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """``FileSystemReader`` whose metadata is read by :func:`load_metadata`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            metadata = load_metadata(f.read())
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """The default planner, with non-tensor values read by ``torch.load(weights_only=True)``."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._traverse import set_element

            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj
