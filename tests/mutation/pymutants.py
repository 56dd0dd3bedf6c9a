"""Mutants of a Python module, generated from its syntax tree, applied as text replacements.

Each mutant replaces one span of the source (one expression or one statement) with the text of
its mutated node, so the rest of the file stays byte for byte as it was and a survivor is named
by its line. Operators: comparison swaps (boundary and negation), `and`/`or` swaps, arithmetic
swaps, `not` removed, constants changed (numbers +1/-1, strings emptied or changed, booleans
flipped; prose such as error messages left alone), `if`/`while` conditions negated, statements removed (replaced by
`pass`), `return <value>` made `return None`, dict entries deleted, call arguments dropped.

Left alone (mutating them would only add equivalent mutants): docstrings, annotations, the
text of log calls, f-string internals, `from __future__` imports and imports in general.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass

COMPARE_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Lt: (ast.LtE, ast.GtE), ast.LtE: (ast.Lt, ast.Gt), ast.Gt: (ast.GtE, ast.LtE), ast.GtE: (ast.Gt, ast.Lt),
    ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,), ast.Is: (ast.IsNot,), ast.IsNot: (ast.Is,),
    ast.In: (ast.NotIn,), ast.NotIn: (ast.In,),
}
BINOP_SWAPS: dict[type, tuple[type, ...]] = {
    ast.Add: (ast.Sub,), ast.Sub: (ast.Add,), ast.Mult: (ast.FloorDiv,), ast.Div: (ast.Mult,),
    ast.FloorDiv: (ast.Mult,), ast.Mod: (ast.FloorDiv,), ast.Pow: (ast.Mult,),
    ast.BitOr: (ast.BitAnd,), ast.BitAnd: (ast.BitOr,), ast.BitXor: (ast.BitOr,),
    ast.LShift: (ast.RShift,), ast.RShift: (ast.LShift,),
}
SYMBOL = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is",
    ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
    ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.BitOr: "|", ast.BitAnd: "&",
    ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.And: "and", ast.Or: "or",
}
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "msg"}


@dataclass(frozen=True)
class Mutant:
    """One change to one file: replace source[start:end] with `new`."""

    path: str
    line: int
    start: int
    end: int
    new: str
    description: str

    def apply(self, source: str) -> str:
        """The source with this mutant applied."""
        return source[: self.start] + self.new + source[self.end :]


def _offsets(source: str) -> list[int]:
    """Character offset of the start of each line (1-based line numbers index it with line-1)."""
    out, pos = [], 0
    for line in source.splitlines(keepends=True):
        out.append(pos)
        pos += len(line)
    out.append(pos)
    return out


def _is_log_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOG_METHODS
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ("log", "logger", "_log"))


class _Skip:
    """The set of nodes that must not be mutated (docstrings, annotations, f-strings, log calls)."""

    def __init__(self, tree: ast.AST) -> None:
        self.ids: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    self._all(body[0])
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for arg in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs,
                            node.args.vararg, node.args.kwarg]:
                    if arg is not None and arg.annotation is not None:
                        self._all(arg.annotation)
                if node.returns is not None:
                    self._all(node.returns)
            if isinstance(node, ast.AnnAssign):
                self._all(node.annotation)
            if isinstance(node, (ast.JoinedStr, ast.Import, ast.ImportFrom)) or _is_log_call(node):
                self._all(node)

    def _all(self, node: ast.AST) -> None:
        for sub in ast.walk(node):
            self.ids.add(id(sub))

    def __contains__(self, node: ast.AST) -> bool:
        return id(node) in self.ids


def _is_prose(value: str) -> bool:
    """Text written for a human (an error message, a note): changing it is not a rule change."""
    return " " in value.strip() and len(value) >= 12


def _constant_variants(value: object) -> list[tuple[object, str]]:
    if isinstance(value, bool):
        return [(not value, f"{value} -> {not value}")]
    if isinstance(value, int):
        return [(value + 1, f"{value} -> {value + 1}"), (value - 1, f"{value} -> {value - 1}")]
    if isinstance(value, float):
        return [(value + 1, f"{value!r} -> {value + 1!r}")]
    if isinstance(value, str):
        if _is_prose(value):
            return []
        return [("", f"{value[:20]!r} -> ''")] if value else [("XX", "'' -> 'XX'")]
    if isinstance(value, bytes):
        return [(b"", f"{value[:20]!r} -> b''")] if value else [(b"XX", "b'' -> b'XX'")]
    return []


def generate(path: str, source: str) -> list[Mutant]:
    """Every mutant of one module, in source order."""
    tree = ast.parse(source)
    offsets = _offsets(source)
    skip = _Skip(tree)
    mutants: list[Mutant] = []

    def span(node: ast.AST) -> tuple[int, int]:
        # ast columns are UTF-8 byte offsets; convert through the line's bytes
        def pos(line: int, col: int) -> int:
            text = source[offsets[line - 1] : offsets[line]]
            return offsets[line - 1] + len(text.encode("utf-8")[:col].decode("utf-8"))

        return pos(node.lineno, node.col_offset), pos(node.end_lineno, node.end_col_offset)

    def add(node: ast.AST, new_text: str, description: str) -> None:
        start, end = span(node)
        if source[start:end] == new_text:
            return
        mutants.append(Mutant(path, node.lineno, start, end, new_text, description))

    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                for new_op in COMPARE_SWAPS.get(type(op), ()):
                    new = ast.Compare(node.left, [*node.ops[:i], new_op(), *node.ops[i + 1:]], node.comparators)
                    add(node, f"({ast.unparse(new)})", f"`{SYMBOL[type(op)]}` -> `{SYMBOL[new_op]}`")
        elif isinstance(node, ast.BoolOp):
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            add(node, f"({ast.unparse(ast.BoolOp(other, node.values))})",
                f"`{SYMBOL[type(node.op)]}` -> `{SYMBOL[type(other)]}`")
            for i in range(len(node.values)):  # drop one operand
                rest = [*node.values[:i], *node.values[i + 1:]]
                new = rest[0] if len(rest) == 1 else ast.BoolOp(node.op, rest)
                add(node, f"({ast.unparse(new)})", f"operand {i + 1} of `{SYMBOL[type(node.op)]}` removed")
        elif isinstance(node, ast.BinOp):
            for new_op in BINOP_SWAPS.get(type(node.op), ()):
                add(node, f"({ast.unparse(ast.BinOp(node.left, new_op(), node.right))})",
                    f"`{SYMBOL[type(node.op)]}` -> `{SYMBOL[new_op]}`")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
            add(node, f"({ast.unparse(node.operand)})", f"`{type(node.op).__name__}` removed")
        elif isinstance(node, ast.Constant) and node.value is not None and node.value is not Ellipsis:
            for value, description in _constant_variants(node.value):
                add(node, repr(value), f"constant {description}")
        elif isinstance(node, (ast.If, ast.While)):
            start, _ = span(node.test)
            _, end = span(node.test)
            mutants.append(Mutant(path, node.test.lineno, start, end, f"not ({source[start:end]})",
                                  f"`{type(node).__name__.lower()}` condition negated"))
        elif isinstance(node, ast.IfExp):
            add(node.test, f"(not ({ast.unparse(node.test)}))", "conditional expression negated")
        elif isinstance(node, ast.Dict):
            for i, k in enumerate(node.keys):
                if k is None or len(node.keys) < 1:
                    continue
                new = ast.Dict([*node.keys[:i], *node.keys[i + 1:]], [*node.values[:i], *node.values[i + 1:]])
                add(node, ast.unparse(new), f"dict entry {ast.unparse(k)[:30]} deleted")
        elif isinstance(node, ast.Call) and node.keywords:
            for i, kw in enumerate(node.keywords):
                if kw.arg is None:
                    continue
                new = ast.Call(node.func, node.args, [*node.keywords[:i], *node.keywords[i + 1:]])
                add(node, ast.unparse(new), f"keyword argument {kw.arg}= dropped")
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            add(node, "return None", "`return <value>` -> `return None`")
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.If, ast.For, ast.While,
                             ast.With, ast.Try, ast.ExceptHandler)):
            for body in ("body", "orelse", "finalbody"):
                stmts = getattr(node, body, None) or []
                for stmt in stmts:
                    if stmt in skip or isinstance(stmt, (ast.Pass, ast.FunctionDef, ast.AsyncFunctionDef,
                                                         ast.ClassDef, ast.Import, ast.ImportFrom, ast.Global,
                                                         ast.Nonlocal)):
                        continue
                    if isinstance(node, ast.Module) and isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                        continue  # module constants are mutated through their values
                    add(stmt, "pass", f"statement removed: {ast.unparse(stmt).splitlines()[0][:60]}")
    # a mutant that does not compile is not a mutant
    out = []
    seen = set()
    for m in sorted(mutants, key=lambda m: (m.start, m.end, m.description)):
        key = (m.start, m.end, m.new)
        if key in seen:
            continue
        seen.add(key)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compile(m.apply(source), path, "exec")
        except SyntaxError:
            continue
        out.append(m)
    return out
