"""The type stubs (sparse_rtrl/__init__.pyi, installed with the package) say what the module has: the
same public names at the top level and in every class, and the signatures python/stubgen.py makes of
the built module today (a binding added, renamed or changed without regenerating the stubs fails)."""
import ast
import importlib.util
import os

import pytest

import sparse_rtrl as s
from sparse_rtrl import _core

PACKAGE_STUB = os.path.join(os.path.dirname(s.__file__), "__init__.pyi")
SOURCE = os.path.join(os.path.dirname(__file__), "..")


def stub_tree():
    assert os.path.exists(PACKAGE_STUB), f"{PACKAGE_STUB}: the package has no stubs"
    assert os.path.exists(os.path.join(os.path.dirname(s.__file__), "py.typed")), "py.typed is missing (PEP 561)"
    return ast.parse(open(PACKAGE_STUB).read())


def top_level_names(tree):
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom) and node.module in ("torch_interop", None) and node.level == 1:
            names.update(a.asname or a.name for a in node.names)
    return names


def test_stub_top_level_names_are_the_modules():
    names = top_level_names(stub_tree())
    public = set(s.__all__) | {"__version__"}
    assert names == public, f"only in the stubs: {sorted(names - public)}; only in the module: {sorted(public - names)}"


def class_names(node):
    out = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name != "__init__":
            out.add(item.name)
        elif isinstance(item, ast.AnnAssign):
            out.add(item.target.id)
    return out


@pytest.mark.parametrize("dtype_module", ["float32", "float64"])
def test_stub_classes_have_the_modules_public_names(dtype_module):
    mod = getattr(_core, dtype_module)
    classes = {n.name: n for n in stub_tree().body if isinstance(n, ast.ClassDef)}
    for name, node in classes.items():
        cls = getattr(mod, name, None) or getattr(_core, name)
        if hasattr(cls, "__members__"):
            assert set(cls.__members__) <= class_names(node), name
            continue
        actual = {n for n in dir(cls) if not n.startswith("_")}
        actual |= {n for n in ("__getitem__", "__setitem__", "__contains__", "__len__", "__iadd__", "__add__",
                               "__copy__", "__deepcopy__", "__eq__") if n in cls.__dict__}
        stubbed = class_names(node)
        assert stubbed == actual, (f"{name}: only in the stubs {sorted(stubbed - actual)}, only in the module "
                                   f"{sorted(actual - stubbed)}")


def test_stubs_are_what_stubgen_makes_of_the_module():
    spec = importlib.util.spec_from_file_location("sparse_rtrl_stubgen", os.path.join(SOURCE, "stubgen.py"))
    stubgen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stubgen)
    assert open(PACKAGE_STUB).read() == stubgen.generate(), \
        "the installed stubs differ from the module's signatures: PYTHONPATH=<build>/python python3 python/stubgen.py"
