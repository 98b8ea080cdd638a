"""Read struct member offsets from the kernel's BTF (/sys/kernel/btf/vmlinux).

Tracepoint records do not carry everything (``kfree_skb`` has no packet length, a connect()
record has no socket type), so a few programs read kernel memory with ``bpf_probe_read_kernel``
at offsets taken from BTF at run time — the CO-RE idea, without a compiler. Only what is needed is
parsed: type records are walked once to index struct names; members are decoded on demand.
Format: Documentation/bpf/btf.rst.
"""

from __future__ import annotations

import functools
import logging
import struct
from dataclasses import dataclass

log = logging.getLogger(__name__)

VMLINUX = "/sys/kernel/btf/vmlinux"

_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT = 9, 10, 11, 12, 13, 14, 15, 16
_DECL_TAG, _TYPE_TAG, _ENUM64 = 17, 18, 19
_MODIFIERS = {_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG}

# bytes that follow the 12-byte common header: fixed, and per vlen item
_EXTRA = {
    _INT: (4, 0), _PTR: (0, 0), _ARRAY: (12, 0), _STRUCT: (0, 12), _UNION: (0, 12), _ENUM: (0, 8),
    _FWD: (0, 0), _TYPEDEF: (0, 0), _VOLATILE: (0, 0), _CONST: (0, 0), _RESTRICT: (0, 0), _FUNC: (0, 0),
    _FUNC_PROTO: (0, 8), _VAR: (4, 0), _DATASEC: (0, 12), _FLOAT: (0, 0), _DECL_TAG: (4, 0),
    _TYPE_TAG: (0, 0), _ENUM64: (0, 12),
}  # fmt: skip


class BtfError(ValueError):
    pass


@dataclass(frozen=True)
class Member:
    offset: int
    """Byte offset from the start of the outermost struct."""
    size: int
    """Size in bytes (0 when unknown)."""


class Btf:
    def __init__(self, data: bytes) -> None:
        magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != 0xEB9F:
            raise BtfError("not BTF data")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._types_start = hdr_len + type_off
        self._strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self._pos: list[int] = [0]  # type id -> position of its record (id 0 is void)
        self._structs: dict[str, list[int]] = {}
        self._typedefs: dict[str, int] = {}  # only btf_trace_* (raw tracepoint prototypes)
        self._funcs: dict[str, int] = {}  # kernel functions (what an fentry program attaches to)
        pos, end = self._types_start, self._types_start + type_len
        unpack = struct.Struct("<III").unpack_from
        while pos < end:
            name_off, info, _ = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            try:
                fixed, per_item = _EXTRA[kind]
            except KeyError:
                raise BtfError(f"unknown BTF kind {kind}") from None
            self._pos.append(pos)
            if kind in (_STRUCT, _UNION) and name_off:
                self._structs.setdefault(self._str(name_off), []).append(len(self._pos) - 1)
            elif kind == _TYPEDEF and name_off and data.startswith(b"btf_trace_", hdr_len + str_off + name_off):
                self._typedefs[self._str(name_off)] = len(self._pos) - 1
            elif kind == _FUNC and name_off:
                self._funcs[self._str(name_off)] = len(self._pos) - 1
            pos += 12 + fixed + per_item * vlen

    def _str(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _header(self, type_id: int) -> tuple[int, int, int, int]:
        name_off, info, size_or_type = struct.unpack_from("<III", self._data, self._pos[type_id])
        return name_off, (info >> 24) & 0x1F, info, size_or_type

    def _resolve(self, type_id: int) -> int:
        """Skip typedefs and qualifiers."""
        for _ in range(32):
            _, kind, _, ref = self._header(type_id)
            if kind not in _MODIFIERS:
                return type_id
            type_id = ref
        raise BtfError("type chain too long")

    def _size(self, type_id: int) -> int:
        type_id = self._resolve(type_id)
        _, kind, _, size = self._header(type_id)
        if kind == _PTR:
            return 8
        if kind in (_INT, _STRUCT, _UNION, _ENUM, _ENUM64, _FLOAT):
            return size
        if kind == _ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._data, self._pos[type_id] + 12)
            return self._size(elem) * nelems
        return 0

    def _find(self, type_id: int, member: str) -> Member | None:
        _, kind, info, _ = self._header(type_id)
        vlen, bitfield_offsets = info & 0xFFFF, bool(info >> 31)
        pos = self._pos[type_id] + 12
        for i in range(vlen):
            name_off, mtype, moff = struct.unpack_from("<III", self._data, pos + 12 * i)
            bit_size = (moff >> 24) if bitfield_offsets else 0
            bit_off = (moff & 0xFFFFFF) if bitfield_offsets else moff
            if name_off and self._str(name_off) == member:
                if bit_size or bit_off % 8:
                    raise BtfError(f"{member} is a bitfield")
                return Member(bit_off // 8, self._size(mtype))
            if not name_off:  # anonymous struct/union: its members belong to us
                inner = self._resolve(mtype)
                if self._header(inner)[1] in (_STRUCT, _UNION):
                    found = self._find(inner, member)
                    if found is not None:
                        return Member(bit_off // 8 + found.offset, found.size)
        return None

    def member(self, struct_name: str, member: str) -> Member:
        """Offset and size of ``struct_name.member`` (anonymous unions/structs are looked into)."""
        for type_id in self._structs.get(struct_name, []):
            if self._header(type_id)[1] != _STRUCT:
                continue
            found = self._find(type_id, member)
            if found is not None:
                return found
        raise BtfError(f"struct {struct_name} has no member {member} in BTF")

    def _type_name(self, type_id: int) -> str:
        """``struct sock *``-like names, enough to check a prototype (qualifiers dropped)."""
        type_id = self._resolve(type_id) if self._header(type_id)[1] != _TYPEDEF else type_id
        name_off, kind, _, ref = self._header(type_id)
        if kind == _PTR:
            return self._type_name(ref) + " *" if ref else "void *"
        prefix = {_STRUCT: "struct ", _UNION: "union ", _ENUM: "enum ", _ENUM64: "enum "}.get(kind, "")
        return prefix + (self._str(name_off) if name_off else "?")

    def raw_tracepoint_id(self, name: str) -> int:
        """The BTF id of tracepoint ``name``'s ``btf_trace_<name>`` prototype (what a BTF-typed raw
        tracepoint program is loaded against)."""
        type_id = self._typedefs.get(f"btf_trace_{name}")
        if type_id is None:
            raise BtfError(f"no BTF prototype for tracepoint {name}")
        return type_id

    def function_id(self, name: str) -> int:
        """The BTF id of kernel function ``name`` (what an fentry program is loaded against)."""
        type_id = self._funcs.get(name)
        if type_id is None:
            raise BtfError(f"no BTF for kernel function {name}")
        return type_id

    def function_args(self, name: str) -> list[str]:
        """Type names of kernel function ``name``'s parameters (an fentry program's ``u64 args[]``)."""
        _, kind, _, ref = self._header(self.function_id(name))
        proto = self._resolve(ref)
        _, kind, info, _ = self._header(proto)
        if kind != _FUNC_PROTO:
            raise BtfError(f"{name} has no prototype")
        pos = self._pos[proto] + 12
        return [self._type_name(struct.unpack_from("<II", self._data, pos + 8 * i)[1]) for i in range(info & 0xFFFF)]

    def raw_tracepoint_args(self, name: str) -> list[str]:
        """Type names of a tracepoint's arguments as a raw tracepoint program gets them (``u64 args[]``),
        from its ``btf_trace_<name>`` prototype; raises :class:`BtfError` when the kernel has none."""
        type_id = self._typedefs.get(f"btf_trace_{name}")
        if type_id is None:
            raise BtfError(f"no BTF prototype for tracepoint {name}")
        _, kind, _, ref = self._header(self._resolve(type_id))
        if kind != _PTR:
            raise BtfError(f"btf_trace_{name} is not a function pointer")
        proto = self._resolve(ref)
        _, kind, info, _ = self._header(proto)
        if kind != _FUNC_PROTO:
            raise BtfError(f"btf_trace_{name} is not a function pointer")
        pos = self._pos[proto] + 12
        params = [struct.unpack_from("<II", self._data, pos + 8 * i)[1] for i in range(info & 0xFFFF)]
        return [self._type_name(t) for t in params[1:]]  # the first is the tracepoint's private data


@functools.cache
def vmlinux() -> Btf:
    """The running kernel's BTF, parsed once per process."""
    with open(VMLINUX, "rb") as f:
        return Btf(f.read())
