"""Which codec of a task a frame uses (SNR-adaptive rate): the services' small hooks.

* ``codec_view(spec, name) -> TaskSpec``: the task as seen through one of its codecs (its
  ``compact_dim``, ``symbols_per_image``, ``compression_ratio``, edge and server components);
  ``""`` is the task's default codec; an unknown name is INVALID_ARGUMENT naming ``codec`` and
  the known ones. The server keys its decoders and batchers by (task, codec) with it.
* ``frame_symbols(task_info, name) -> int``: the symbols per image a frame of that codec must
  carry, from the server's ``TaskInfo`` (``codecs``); the relay validates with it.
* ``codec_infos(spec) -> [CodecInfo]``: a task's codecs for ``GetInfo``.
"""
from __future__ import annotations

import dataclasses

from rkdsc.common.service.frames import invalid, shown
from rkdsc.v1 import emulator_pb2 as pb


def codec_view(spec, name: str):
    """``spec`` (a TaskSpec) with the fields of its codec ``name`` ("" = the default codec)."""
    try:
        c = spec.codec(name)
    except KeyError:
        known = ", ".join(repr(n) for n in spec.codec_names)
        raise invalid(f"codec: unknown codec {shown(name)} of task {spec.name!r} (known: {known})") from None
    if not name:
        return spec
    return dataclasses.replace(spec, compression_ratio=c.compression_ratio, compact_dim=c.compact_dim,
                               symbols_per_image=c.symbols_per_image, edge=c.edge, server=c.server)


def frame_symbols(task_info: "pb.TaskInfo", name: str) -> int:
    """Symbols per image of codec ``name`` of a task the server described (INVALID_ARGUMENT naming
    ``codec`` when the task has no such codec)."""
    if not name:
        return int(task_info.symbols_per_image)
    for c in task_info.codecs:
        if c.name == name:
            return int(c.symbols_per_image)
    known = ", ".join(repr(c.name) for c in task_info.codecs) or "'' (the default codec only)"
    raise invalid(f"codec: unknown codec {shown(name)} of task {task_info.name!r} (known: {known})")


def codec_infos(spec) -> list:
    return [pb.CodecInfo(name=c.name, compression_ratio=c.compression_ratio, compact_dim=c.compact_dim,
                         symbols_per_image=c.symbols_per_image) for c in spec.codecs]
