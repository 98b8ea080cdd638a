"""A tiny eBPF instruction assembler: enough to write tracepoint programs in Python.

Each method appends one instruction (``ld_map_fd`` appends the two-slot ``ld_imm64``). Jumps take
a label name; :meth:`Asm.assemble` resolves labels and returns the bytes ``BPF_PROG_LOAD`` wants.
Registers are :class:`Reg` objects so that ``mov(R1, R6)`` (register) and ``mov(R1, 6)``
(immediate) cannot be confused. Encoding follows the kernel's Documentation/bpf/standardization.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reg:
    n: int

    def __repr__(self) -> str:
        return f"r{self.n}"


R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = (Reg(i) for i in range(11))
FP = R10  # read-only frame pointer

# instruction classes
_LD, _LDX, _ST, _STX, _ALU, _JMP, _JMP32, _ALU64 = range(8)
# sizes
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
# modes
_IMM, _MEM, _ATOMIC = 0x00, 0x60, 0xC0
# sources
_K, _X = 0x00, 0x08

_ALU_OPS = {
    "add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50, "lsh": 0x60,
    "rsh": 0x70, "neg": 0x80, "mod": 0x90, "xor": 0xA0, "mov": 0xB0, "arsh": 0xC0,
}  # fmt: skip
_JMP_OPS = {
    "ja": 0x00, "jeq": 0x10, "jgt": 0x20, "jge": 0x30, "jset": 0x40, "jne": 0x50, "jsgt": 0x60,
    "jsge": 0x70, "jlt": 0xA0, "jle": 0xB0, "jslt": 0xC0, "jsle": 0xD0,
}  # fmt: skip
_CALL, _EXIT = 0x80, 0x90
_END = 0xD0  # byte swap (ALU class)

# atomic operations (imm field of BPF_STX | BPF_ATOMIC)
ATOMIC_ADD, ATOMIC_OR, ATOMIC_AND, ATOMIC_XOR = 0x00, 0x40, 0x50, 0xA0
FETCH = 0x01
ATOMIC_CMPXCHG = 0xF1  # r0 = *(dst + off); if it equalled r0 (before), *(dst + off) = src

PSEUDO_MAP_FD = 1

_INSN = struct.Struct("<BBhi")


class AsmError(ValueError):
    """A program that cannot be encoded (unknown label, offset out of range, bad operand)."""


class Asm:
    """Builds one program. Methods return ``self`` so short sequences can be chained."""

    def __init__(self) -> None:
        self._insns: list[list[int]] = []  # [code, dst, src, off, imm]
        self._labels: dict[str, int] = {}
        self._fixups: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._insns)

    def _emit(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> Asm:
        if not -(1 << 15) <= off < (1 << 15):
            raise AsmError(f"offset {off} does not fit in 16 bits")
        if not -(1 << 31) <= imm < (1 << 32):
            raise AsmError(f"immediate {imm} does not fit in 32 bits")
        if imm >= (1 << 31):
            imm -= 1 << 32
        self._insns.append([code, dst, src, off, imm])
        return self

    # --- labels ---------------------------------------------------------------------------
    def label(self, name: str) -> Asm:
        if name in self._labels:
            raise AsmError(f"label {name!r} defined twice")
        self._labels[name] = len(self._insns)
        return self

    # --- ALU --------------------------------------------------------------------------------
    def _alu(self, cls: int, op: str, dst: Reg, src: Reg | int) -> Asm:
        code = cls | _ALU_OPS[op]
        if isinstance(src, Reg):
            return self._emit(code | _X, dst.n, src.n)
        return self._emit(code | _K, dst.n, 0, 0, src)

    def alu64(self, op: str, dst: Reg, src: Reg | int) -> Asm:
        return self._alu(_ALU64, op, dst, src)

    def alu32(self, op: str, dst: Reg, src: Reg | int) -> Asm:
        return self._alu(_ALU, op, dst, src)

    def mov(self, dst: Reg, src: Reg | int) -> Asm:
        return self.alu64("mov", dst, src)

    def mov32(self, dst: Reg, src: Reg | int) -> Asm:
        """32-bit move: zero-extends into the upper half."""
        return self.alu32("mov", dst, src)

    def add(self, dst: Reg, src: Reg | int) -> Asm:
        return self.alu64("add", dst, src)

    def sub(self, dst: Reg, src: Reg | int) -> Asm:
        return self.alu64("sub", dst, src)

    def and_(self, dst: Reg, src: Reg | int) -> Asm:
        return self.alu64("and", dst, src)

    def or_(self, dst: Reg, src: Reg | int) -> Asm:
        return self.alu64("or", dst, src)

    def lsh(self, dst: Reg, src: Reg | int) -> Asm:
        return self.alu64("lsh", dst, src)

    def rsh(self, dst: Reg, src: Reg | int) -> Asm:
        return self.alu64("rsh", dst, src)

    def be16(self, dst: Reg) -> Asm:
        """Convert between host (little-endian) and network byte order, 16 bits."""
        return self._emit(_ALU | _END | _X, dst.n, 0, 0, 16)

    def ld_imm64(self, dst: Reg, value: int, src: int = 0) -> Asm:
        value &= (1 << 64) - 1
        lo, hi = value & 0xFFFFFFFF, value >> 32
        self._emit(_LD | DW | _IMM, dst.n, src, 0, lo)
        return self._emit(0, 0, 0, 0, hi)

    def ld_map_fd(self, dst: Reg, map_fd: int) -> Asm:
        """Load a map's address; the verifier rewrites the fd (``BPF_PSEUDO_MAP_FD``)."""
        return self.ld_imm64(dst, map_fd, PSEUDO_MAP_FD)

    # --- memory -----------------------------------------------------------------------------
    def ldx(self, size: int, dst: Reg, src: Reg, off: int) -> Asm:
        """``dst = *(size *)(src + off)``"""
        return self._emit(_LDX | _MEM | size, dst.n, src.n, off)

    def stx(self, size: int, dst: Reg, off: int, src: Reg) -> Asm:
        """``*(size *)(dst + off) = src``"""
        return self._emit(_STX | _MEM | size, dst.n, src.n, off)

    def st(self, size: int, dst: Reg, off: int, imm: int) -> Asm:
        """``*(size *)(dst + off) = imm``"""
        return self._emit(_ST | _MEM | size, dst.n, 0, off, imm)

    def atomic(self, size: int, dst: Reg, off: int, src: Reg, op: int) -> Asm:
        """``*(size *)(dst + off) <op>= src``; with ``FETCH`` in ``op`` src receives the old value."""
        if size not in (W, DW):
            raise AsmError("atomic operations are 32 or 64 bits wide")
        return self._emit(_STX | _ATOMIC | size, dst.n, src.n, off, op)

    def zero_stack(self, off: int, nbytes: int, reg: Reg = R0) -> Asm:
        """Zero ``nbytes`` (a multiple of 8) of stack from ``FP + off``; uses ``reg`` as scratch."""
        if nbytes % 8 or off % 8:
            raise AsmError("zero_stack works on 8-byte aligned, 8-byte multiple ranges")
        self.mov(reg, 0)
        for i in range(0, nbytes, 8):
            self.stx(DW, FP, off + i, reg)
        return self

    # --- jumps and calls --------------------------------------------------------------------
    def jmp(self, op: str, dst: Reg, src: Reg | int, target: str) -> Asm:
        code = _JMP | _JMP_OPS[op]
        self._fixups.append((len(self._insns), target))
        if isinstance(src, Reg):
            return self._emit(code | _X, dst.n, src.n)
        return self._emit(code | _K, dst.n, 0, 0, src)

    def ja(self, target: str) -> Asm:
        self._fixups.append((len(self._insns), target))
        return self._emit(_JMP | _JMP_OPS["ja"])

    def jeq(self, dst: Reg, src: Reg | int, target: str) -> Asm:
        return self.jmp("jeq", dst, src, target)

    def jne(self, dst: Reg, src: Reg | int, target: str) -> Asm:
        return self.jmp("jne", dst, src, target)

    def call(self, helper: int) -> Asm:
        return self._emit(_JMP | _CALL, 0, 0, 0, helper)

    def exit(self) -> Asm:
        return self._emit(_JMP | _EXIT)

    def ret(self, value: int = 0) -> Asm:
        return self.mov(R0, value).exit()

    # --- output -----------------------------------------------------------------------------
    def assemble(self) -> bytes:
        insns = [list(i) for i in self._insns]
        for index, target in self._fixups:
            if target not in self._labels:
                raise AsmError(f"undefined label {target!r}")
            rel = self._labels[target] - index - 1
            if not -(1 << 15) <= rel < (1 << 15):
                raise AsmError(f"jump to {target!r} is too far")
            insns[index][3] = rel
        return b"".join(_INSN.pack(c, (s << 4) | d, o, i) for c, d, s, o, i in insns)

    @property
    def count(self) -> int:
        return len(self._insns)
