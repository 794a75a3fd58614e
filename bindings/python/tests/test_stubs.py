"""The type stubs (_libsim.pyi) describe the extension as it is: same names, same members, same parameters."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import libsim
from libsim import _libsim

STUB = Path(libsim.__file__).with_name("_libsim.pyi")
PACKAGE_DIR = Path(libsim.__file__).parent


def stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text())


def stub_top_level() -> dict[str, ast.AST]:
    names: dict[str, ast.AST] = {}
    for node in stub_tree().body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def runtime_public(obj: object) -> set[str]:
    return {n for n in vars(obj) if not n.startswith("_")}


def stub_members(cls: ast.ClassDef) -> set[str]:
    out = set()
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            out.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
    return {n for n in out if not n.startswith("_")}


def test_package_files_are_there() -> None:
    assert (PACKAGE_DIR / "py.typed").is_file()
    assert STUB.is_file()


def test_module_level_names_match() -> None:
    stub = {n for n in stub_top_level() if not n.startswith("_") and n not in ("BytesLike", "ClockLike")}
    runtime = {n for n in dir(_libsim) if not n.startswith("_")}
    assert stub == runtime


CLASSES = sorted(n for n, v in vars(_libsim).items() if isinstance(v, type) and not n.startswith("_"))


@pytest.mark.parametrize("name", CLASSES)
def test_class_members_match(name: str) -> None:
    node = stub_top_level()[name]
    assert isinstance(node, ast.ClassDef)
    runtime_cls = getattr(_libsim, name)
    runtime = runtime_public(runtime_cls)
    is_enum = hasattr(runtime_cls, "__members__")
    if is_enum:
        runtime -= {"name", "value"}  # declared once on the stub's _Enum base
        assert set(runtime_cls.__members__) == stub_members(node) & set(runtime_cls.__members__)
    assert runtime == stub_members(node), name


def signature_parameters(doc: str, name: str) -> list[list[str]]:
    """Parameter names of each overload in a pybind11 docstring ('name(a: int, *, b: str = 1) -> None')."""
    out = []
    for line in doc.splitlines():
        m = re.match(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) -> ", line.strip())
        if not m:
            continue
        params = []
        depth = 0
        current = ""
        for ch in m.group(1) + ",":
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            if ch == "," and depth == 0:
                token = current.strip()
                if token:
                    params.append(token.split(":")[0].split("=")[0].strip())
                current = ""
            else:
                current += ch
        out.append([p for p in params if p not in ("self", "*")])
    return out


def stub_parameters(fn: ast.FunctionDef) -> list[str]:
    args = fn.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return [n for n in names if n not in ("self", "cls")]


def callables() -> list[tuple[str, object, ast.FunctionDef]]:
    out = []
    top = stub_top_level()
    for name, node in top.items():
        if isinstance(node, ast.FunctionDef) and not name.startswith("_"):
            out.append((name, getattr(_libsim, name), node))
        if isinstance(node, ast.ClassDef) and hasattr(_libsim, name):
            for member in node.body:
                if isinstance(member, ast.FunctionDef) and (not member.name.startswith("_")
                                                            or member.name == "__init__"):
                    if any(isinstance(d, ast.Name) and d.id == "property" for d in member.decorator_list):
                        continue
                    out.append((f"{name}.{member.name}", getattr(getattr(_libsim, name), member.name), member))
    return out


@pytest.mark.parametrize(("qualname", "runtime", "node"), callables(), ids=[c[0] for c in callables()])
def test_parameters_match(qualname: str, runtime: object, node: ast.FunctionDef) -> None:
    doc = inspect.getdoc(runtime) or ""
    overloads = signature_parameters(doc, node.name)
    if not overloads:
        pytest.skip(f"no pybind11 signature for {qualname}")  # e.g. the enums' generated __init__
    assert stub_parameters(node) in overloads, f"{qualname}: stub {stub_parameters(node)} vs {overloads}"


def test_the_package_exports_the_public_api() -> None:
    for name in libsim.__all__:
        assert hasattr(libsim, name), name
    internal = {"EventIterator"}
    for name in dir(_libsim):
        if not name.startswith("_") and name[0].isupper() and not name.isupper():
            assert name in libsim.__all__ or name in internal, f"{name} is not exported by libsim"
