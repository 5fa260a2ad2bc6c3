"""Sphinx extension: the API reference from the code, and no public name without a docstring.

Two jobs, both for ``sphinx.ext.autodoc`` running against the installed
package:

1. The compiled module ``pidfd._native`` has no Python source, so autodoc
   would see only what PyO3 exposes: parameter names without types, and the
   Rust doc comments. Its documented interface is the hand-written stub
   ``_native.pyi`` (exact types and docstrings; ``stubtest`` holds it to the
   module in CI). For every object of ``pidfd._native``, this extension
   gives autodoc the stub's signature and docstring instead.
2. Every public name must be documented: each name in ``pidfd.__all__``
   must appear in the reference, and it and each of its public members
   must have a docstring (in the code, or for native objects in the stub).
   A gap is a Sphinx warning, which the strict build (``-W``) turns into a
   failure.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sphinx import addnodes
from sphinx.application import Sphinx

# Sphinx's own parser for a type annotation into cross-referenced nodes, as
# its Python domain renders `:type:`; private, so the docs extra pins Sphinx.
from sphinx.domains.python._annotations import _parse_annotation
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

LOG = logging.getLogger(__name__)
NATIVE = "pidfd._native"


@dataclass
class StubEntry:
    args: str | None  # "(pid: int, *, thread: bool = False)"; None for properties
    returns: str | None
    docstring: str | None


def _signature(node: ast.FunctionDef) -> str:
    """The parameters of a stub function as a signature string, without self."""
    args = node.args
    if args.args and args.args[0].arg in ("self", "cls"):
        args = ast.arguments(
            posonlyargs=args.posonlyargs,
            args=args.args[1:],
            vararg=args.vararg,
            kwonlyargs=args.kwonlyargs,
            kw_defaults=args.kw_defaults,
            kwarg=args.kwarg,
            defaults=args.defaults,
        )
    return f"({ast.unparse(args)})"


def load_stub(path: Path) -> dict[str, StubEntry]:
    """Qualified name (``PidFd.wait``) -> signature and docstring, from the stub."""
    entries: dict[str, StubEntry] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for i, node in enumerate(body):
            if isinstance(node, ast.ClassDef):
                name = prefix + node.name
                entries[name] = StubEntry(None, None, ast.get_docstring(node))
                visit(node.body, name + ".")
            elif isinstance(node, ast.FunctionDef):
                is_property = any(
                    isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list
                )
                entries[prefix + node.name] = StubEntry(
                    None if is_property else _signature(node),
                    ast.unparse(node.returns) if node.returns else None,
                    ast.get_docstring(node),
                )
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                # A variable's docstring is the string statement after it.
                nxt = body[i + 1] if i + 1 < len(body) else None
                doc = None
                if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                    doc = inspect.cleandoc(str(nxt.value.value))
                entries[prefix + node.target.id] = StubEntry(
                    None, ast.unparse(node.annotation), doc
                )

    visit(ast.parse(path.read_text(encoding="utf-8")).body, "")
    return entries


def _stub_path() -> Path:
    native = importlib.import_module(NATIVE)
    return Path(native.__file__).with_name("_native.pyi")


def _native_qualname(name: str) -> str | None:
    """``PidFd.wait`` if ``name`` (``pidfd.PidFd.wait``) is native, else None."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "pidfd":
        return None
    pidfd = importlib.import_module("pidfd")
    native = importlib.import_module(NATIVE)
    top = parts[1]
    # Native only if the package re-exports the native object itself (not,
    # say, a Python wrapper of the same name such as ``wait_any``).
    if getattr(pidfd, top, None) is not getattr(native, top, object()):
        return None
    return ".".join(parts[1:])


class Reference:
    def __init__(self) -> None:
        self.stub: dict[str, StubEntry] = {}
        self.documented: set[str] = set()

    def builder_inited(self, app: Sphinx) -> None:
        self.stub = load_stub(_stub_path())

    def _entry(self, name: str, obj: Any) -> StubEntry | None:
        qual = _native_qualname(name)
        return self.stub.get(qual) if qual else None

    def process_docstring(
        self, app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
    ) -> None:
        self.documented.add(name)
        entry = self._entry(name, obj)
        if entry is None:
            return
        if entry.docstring is None:
            LOG.warning("%s has no docstring in the stub %s", name, _stub_path().name)
            return
        lines[:] = [*entry.docstring.splitlines(), ""]

    def process_signature(
        self,
        app: Sphinx,
        what: str,
        name: str,
        obj: Any,
        options: Any,
        signature: str | None,
        return_annotation: str | None,
    ) -> tuple[str | None, str | None] | None:
        entry = self._entry(name, obj)
        if entry is None:
            return None
        if what == "class":
            # Native classes have no public constructor.
            return "", None
        if what in ("attribute", "property"):
            # Autodoc gives these no signature to replace; the type is added
            # to the rendered description instead (add_property_type).
            return None
        return entry.args or "", entry.returns

    def add_property_type(self, app: Sphinx, domain: str, objtype: str, content: Any) -> None:
        """Show a native property's type from the stub, as autodoc does for Python ones."""
        if domain != "py" or objtype not in ("attribute", "property"):
            return
        for sig in content.parent.children:
            if not isinstance(sig, addnodes.desc_signature):
                continue
            entry = self._entry(f"{sig.get('module')}.{sig.get('fullname')}", None)
            if entry is None or entry.args is not None or not entry.returns:
                continue
            if any(isinstance(n, addnodes.desc_annotation) for n in sig.children):
                continue
            sig += addnodes.desc_annotation(
                "",
                "",
                addnodes.desc_sig_punctuation("", ":"),
                addnodes.desc_sig_space(),
                *_parse_annotation(entry.returns, app.env),
            )

    def check(self, app: Sphinx, env: Any) -> None:
        """Every public name is in the reference, with a docstring; so are its members."""
        pidfd = importlib.import_module("pidfd")
        for name in pidfd.__all__:
            full = f"pidfd.{name}"
            obj = getattr(pidfd, name)
            if name == "__version__":
                continue
            if full not in self.documented:
                LOG.warning(
                    "public name %s is not in the API reference: add it to docs/api.md",
                    full,
                )
            if obj is getattr(subprocess, name, None):
                # Re-exported as the standard library's own object (so that
                # `import pidfd as subprocess` works): documented by Python,
                # and its docstrings are not ours to write.
                continue
            self._require_doc(full, obj)
            if inspect.isclass(obj):
                attr_docs = _attribute_docs(obj)
                for member, value in vars(obj).items():
                    if member.startswith("_"):
                        continue
                    if _is_data(value):
                        # A plain attribute has no docstring of its own;
                        # autodoc takes its ``#:`` comment, and so do we.
                        if not attr_docs.get(member):
                            LOG.warning(
                                "public attribute %s.%s has no #: doc comment in the code",
                                full,
                                member,
                            )
                        continue
                    self._require_doc(f"{full}.{member}", value)

    def _require_doc(self, name: str, obj: Any) -> None:
        entry = self._entry(name, obj)
        if entry is not None:
            doc = entry.docstring
            where = "in python/pidfd/_native.pyi"
        else:
            if isinstance(obj, (staticmethod, classmethod)):
                obj = obj.__func__
            doc = obj.__doc__ if not isinstance(obj, property) else obj.fget.__doc__
            where = "in the code"
        if not (doc and doc.strip()):
            LOG.warning("public name %s has no docstring %s", name, where)


def _is_data(value: Any) -> bool:
    """A plain class attribute (a default value), not a method or descriptor."""
    return not (
        callable(value)
        or isinstance(value, (property, staticmethod, classmethod))
        or hasattr(value, "__get__")
    )


def _attribute_docs(cls: type) -> dict[str, list[str]]:
    """The ``#:`` comments on ``cls``'s attributes, as autodoc reads them."""
    if cls.__module__.startswith("pidfd._native"):
        return {}
    try:
        analyzer = ModuleAnalyzer.for_module(cls.__module__)
    except PycodeError:
        return {}
    return {
        attr: lines
        for (owner, attr), lines in analyzer.find_attr_docs().items()
        if owner == cls.__qualname__
    }


def setup(app: Sphinx) -> dict[str, Any]:
    ref = Reference()
    app.connect("builder-inited", ref.builder_inited)
    app.connect("autodoc-process-docstring", ref.process_docstring)
    app.connect("autodoc-process-signature", ref.process_signature)
    app.connect("object-description-transform", ref.add_property_type)
    app.connect("env-check-consistency", ref.check)
    return {"version": "1", "parallel_read_safe": False, "parallel_write_safe": True}
