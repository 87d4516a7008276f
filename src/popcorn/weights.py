"""Which files of a hub repository a model actually loads, so ``popcorn pull`` fetches those
and no others.

A hub repository often holds one model several times: in safetensors and in PyTorch's pickle
format, in fp32 and as an fp16 "variant", as ONNX or OpenVINO exports, and (LTX-Video, Stable
Diffusion 1.5) as single-file checkpoints next to the diffusers folders. A diffusers pipeline
loads the folders its ``model_index.json`` names, and in each the weights of one format and
one variant; transformers and sentence-transformers load the root's weights the same way.
These are pure functions of the repository's file names (and ``model_index.json``), so they
can be checked on a listing without the hub.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

WEIGHT_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".ckpt",
    ".pt",
    ".pth",
    ".msgpack",
    ".h5",
    ".onnx",
    ".onnx_data",
    ".pb",
    ".gguf",
    ".ot",
    ".tflite",
)
"""Weights in some format: only the one format a library loads is kept."""
LOADED_FORMATS = (".safetensors", ".bin")
"""What diffusers and transformers load, in the order they prefer."""
EXPORT_FOLDERS = ("onnx", "openvino", "coreml", "flax")
"""Exports to other runtimes, which no PyTorch library here loads."""
_SHARD = re.compile(r"-\d+-of-\d+$")
_INDEX = re.compile(
    r"^(?P<stem>.+)(?P<format>\.safetensors|\.bin)\.index(?:\.(?P<variant>[^.]+))?\.json$"
)


def variant_of(name: str) -> str | None:
    """The variant (``fp16``, ``ema``, ...) a weight or index file's name carries, or None.

    ``model.fp16.safetensors``, ``model.fp16-00001-of-00002.safetensors`` and
    ``model.safetensors.index.fp16.json`` are fp16; ``model-00001-of-00002.safetensors`` has
    none."""
    base = posixpath.basename(name)
    index = _INDEX.match(base)
    if index is not None:
        return index["variant"]
    stem = base.rsplit(".", 1)[0]
    parts = stem.split(".")
    return _SHARD.sub("", parts[-1]) if len(parts) > 1 else None


def _is_weight(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) or _INDEX.match(posixpath.basename(name)) is not None


def _format_of(name: str) -> str | None:
    index = _INDEX.match(posixpath.basename(name))
    if index is not None:
        return index["format"]
    return next((s for s in LOADED_FORMATS if name.endswith(s)), None)


def loaded_weights(names: Iterable[str], variant: str | None = None) -> list[str]:
    """The weight files (and their shard index) of one folder that a library loads: one
    format (safetensors before PyTorch's .bin), one variant (``variant`` where the folder has
    it, else the files without one), and, when an index lists shards, those shards only (a
    ``consolidated.safetensors`` beside them is another copy)."""
    names = sorted(names)
    for fmt in LOADED_FORMATS:
        candidates = [n for n in names if _format_of(n) == fmt]
        if not candidates:
            continue
        wanted = variant if any(variant_of(n) == variant for n in candidates) else None
        chosen = [n for n in candidates if variant_of(n) == wanted] or candidates
        indexes = [n for n in chosen if _INDEX.match(posixpath.basename(n))]
        if not indexes:
            return chosen
        stems = tuple(_shard_prefixes(indexes))
        return [n for n in chosen if n in indexes or posixpath.basename(n).startswith(stems)]
    return []


def _shard_prefixes(indexes: list[str]) -> Iterable[str]:
    for index in indexes:
        match = _INDEX.match(posixpath.basename(index))
        assert match is not None
        yield match["stem"] + "-"
        yield match["stem"] + "."


def _by_folder(names: Iterable[str]) -> dict[str, list[str]]:
    folders: dict[str, list[str]] = {}
    for name in names:
        folders.setdefault(posixpath.dirname(name), []).append(name)
    return folders


def model_files(names: Iterable[str], variant: str | None = None) -> list[str]:
    """The files a transformers or sentence-transformers model loads from a repository of
    ``names``: everything but exports (ONNX, OpenVINO, ...) and the weights of other formats
    and variants (:func:`loaded_weights`, folder by folder)."""
    kept = [n for n in names if n.split("/", 1)[0] not in EXPORT_FOLDERS]
    found: list[str] = []
    for folder_names in _by_folder(kept).values():
        found += [n for n in folder_names if not _is_weight(n)]
        found += loaded_weights([n for n in folder_names if _is_weight(n)], variant)
    return sorted(found)


def pipeline_components(model_index: Mapping[str, Any]) -> list[str]:
    """The folders a diffusers pipeline loads: the entries of its ``model_index.json`` that name
    a library and a class (``[null, null]`` is a component the pipeline goes without)."""
    return sorted(
        key
        for key, value in model_index.items()
        if not key.startswith("_")
        and isinstance(value, list)
        and len(value) == 2
        and all(isinstance(part, str) for part in value)
    )


def pipeline_files(
    names: Iterable[str], model_index: Mapping[str, Any], variant: str | None = None
) -> list[str]:
    """The files of a diffusers pipeline repository that ``from_pretrained`` (with
    ``variant``) loads: ``model_index.json`` and, in each component's folder, its settings and
    tokenizer files and the weights :func:`loaded_weights` picks. Single-file checkpoints at
    the root and folders the index does not name are left out."""
    components = set(pipeline_components(model_index))
    names = list(names)
    found = [n for n in names if n == "model_index.json"]
    inside = [n for n in names if n.split("/", 1)[0] in components and "/" in n]
    for folder_names in _by_folder(inside).values():
        found += [n for n in folder_names if not _is_weight(n)]
        found += loaded_weights([n for n in folder_names if _is_weight(n)], variant)
    return sorted(found)
