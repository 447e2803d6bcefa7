"""A pickle reader that runs no code: PyTorch's ``data.pkl`` as a tree of inert values.

``pickle.load`` of an untrusted file runs whatever callables the file names.  This walker
interprets the opcode stream (via :func:`pickletools.genops`) on a small stack machine in
which a global is only a name, a call is only a record of (callable name, arguments), and a
persistent id is only its tuple; nothing is imported or called.  The tensors PyTorch rebuilds
(``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``) are then recognised in that
tree by the callable's name.
"""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass, field
from typing import Any

from cvmfs_modelio.models.formats._io import FormatError


@dataclass(frozen=True)
class Global:
    module: str
    name: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False)
class Call:
    """``func(*args)`` as the pickle asked for it, never performed."""

    func: Any
    args: Any
    state: Any = None


@dataclass(eq=False)
class Obj:
    """``cls.__new__(cls, *args)`` then ``__setstate__(state)``: a class name and its state."""

    cls: Any
    args: Any = ()
    state: Any = None


@dataclass(frozen=True)
class PersistentId:
    pid: Any


@dataclass(eq=False)
class _Mark:
    items: list[Any] = field(default_factory=list)


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        raise FormatError("pickle uses an unhashable dictionary key") from None
    return key


def walk(data: bytes, max_ops: int = 10_000_000) -> Any:
    """The object the pickle ``data`` describes, built of inert values (see module doc)."""
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}
    ops = 0

    def pop_mark() -> list[Any]:
        nonlocal stack
        if not marks:
            raise FormatError("pickle pops a mark it never set")
        items = stack
        stack = marks.pop()
        return items

    def pop() -> Any:
        if not stack:
            raise FormatError("pickle pops an empty stack")
        return stack.pop()

    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            ops += 1
            if ops > max_ops:
                raise FormatError(f"pickle has more than {max_ops} opcodes")
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                if len(stack) != 1:
                    raise FormatError("pickle ends with a malformed stack")
                return stack[0]
            if name == "MARK":
                marks.append(stack)
                stack = []
            elif name == "POP":
                pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1] if stack else pop())
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name in (
                "INT",
                "BININT",
                "BININT1",
                "BININT2",
                "LONG",
                "LONG1",
                "LONG4",
                "FLOAT",
                "BINFLOAT",
                "STRING",
                "BINSTRING",
                "SHORT_BINSTRING",
                "BINBYTES",
                "SHORT_BINBYTES",
                "BINBYTES8",
                "UNICODE",
                "BINUNICODE",
                "SHORT_BINUNICODE",
                "BINUNICODE8",
                "BYTEARRAY8",
            ):
                stack.append(arg)
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "APPEND":
                v = pop()
                _target(stack, list).append(v)
            elif name == "APPENDS":
                items = pop_mark()
                _target(stack, list).extend(items)
            elif name == "LIST":
                items = pop_mark()  # first: it rebinds ``stack``
                stack.append(items)
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "TUPLE":
                items = pop_mark()
                stack.append(tuple(items))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                if len(stack) < n:
                    raise FormatError("pickle builds a tuple from too few items")
                items = stack[-n:]
                del stack[-n:]
                stack.append(tuple(items))
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "DICT":
                items = pop_mark()
                d = {_hashable(k): v for k, v in zip(items[::2], items[1::2], strict=False)}
                stack.append(d)
            elif name == "SETITEM":
                v = pop()
                k = pop()
                _setitem(stack, k, v)
            elif name == "SETITEMS":
                items = pop_mark()
                for k, v in zip(items[::2], items[1::2], strict=False):
                    _setitem(stack, k, v)
            elif name in ("EMPTY_SET",):
                stack.append([])
            elif name == "ADDITEMS":
                items = pop_mark()
                _target(stack, list).extend(items)
            elif name == "FROZENSET":
                items = pop_mark()
                stack.append(tuple(items))
            elif name == "GLOBAL":
                module, _, qual = str(arg).partition(" ")
                stack.append(Global(module, qual))
            elif name == "STACK_GLOBAL":
                qual = pop()
                module = pop()
                if not isinstance(module, str) or not isinstance(qual, str):
                    raise FormatError("STACK_GLOBAL with non-string names")
                stack.append(Global(module, qual))
            elif name == "REDUCE":
                args = pop()
                func = pop()
                stack.append(Call(func, args))
            elif name == "NEWOBJ":
                args = pop()
                cls = pop()
                stack.append(Obj(cls, args))
            elif name == "NEWOBJ_EX":
                pop()
                args = pop()
                cls = pop()
                stack.append(Obj(cls, args))
            elif name == "BUILD":
                state = pop()
                target = stack[-1] if stack else pop()
                if isinstance(target, (Obj, Call)):
                    target.state = state
                else:
                    raise FormatError("pickle BUILDs a plain value")
            elif name == "BINPERSID":
                stack.append(PersistentId(pop()))
            elif name == "PERSID":
                stack.append(PersistentId(arg))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not stack:
                    raise FormatError("pickle memoizes from an empty stack")
                memo[int(arg)] = stack[-1]  # type: ignore[arg-type]
            elif name == "MEMOIZE":
                if not stack:
                    raise FormatError("pickle memoizes from an empty stack")
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                slot = int(arg)  # type: ignore[arg-type]
                if slot not in memo:
                    raise FormatError(f"pickle reads memo {arg} it never stored")
                stack.append(memo[slot])
            else:
                raise FormatError(f"pickle opcode {name} is not supported")
    except FormatError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, EOFError, UnicodeDecodeError) as e:
        raise FormatError(f"malformed pickle ({e})") from None
    raise FormatError("pickle has no STOP")


def _target(stack: list[Any], kind: type) -> Any:
    if not stack or not isinstance(stack[-1], kind):
        raise FormatError(f"pickle appends to something that is not a {kind.__name__}")
    return stack[-1]


def _setitem(stack: list[Any], k: Any, v: Any) -> None:
    if not stack:
        raise FormatError("pickle sets an item with no dictionary")
    d = stack[-1]
    if isinstance(d, dict):
        d[_hashable(k)] = v
    elif isinstance(d, (Obj, Call)):  # e.g. an OrderedDict built by REDUCE then filled
        if not isinstance(d.state, dict):
            d.state = {}
        d.state[_hashable(k)] = v
    else:
        raise FormatError("pickle sets an item on something that is not a dictionary")
