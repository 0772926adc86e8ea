"""The shape docs/architecture.md promises: no import cycles, a kernel layer of the standard library only."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import labkit

PACKAGE = Path(labkit.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks: imports there never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    """{module: labkit modules it imports when it runs} (module-level and inside functions)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = _type_checking_lines(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if getattr(node, "lineno", 0) in typing_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_kernel_layer_uses_the_standard_library_only():
    allowed = set(sys.stdlib_module_names) | {"labkit"}
    for path in (PACKAGE / "_linux").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for name in names:
                top = name.split(".")[0]
                assert top in allowed, f"{path.name} imports {name}: labkit/_linux must stay standard-library only"
                if top == "labkit":
                    assert name.startswith("labkit._linux"), f"{path.name} imports {name} from above its layer"


# Paths under /proc or /sys/fs/cgroup may be written only in labkit/_linux/ (the one place that reads the
# kernel). {file: reason} for the files that still may, each to be emptied out:
KERNEL_PATHS_ALLOWED: dict[str, str] = {}  # file -> why it may name /proc or /sys/fs/cgroup itself (none today)
_KERNEL_PATH = re.compile(r"(/proc|/sys/fs/cgroup)(/|$)")


def _leading_text(node: ast.AST) -> str | None:
    """The text a string literal starts with: a plain string, or an f-string's constant head."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        head = ""
        for part in node.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                break
            head += part.value
        return head
    return None


def kernel_paths(path: Path) -> list[str]:
    """'line: text' of each string literal in ``path`` that is a path under /proc or /sys/fs/cgroup."""
    found = []
    nodes = list(ast.walk(ast.parse(path.read_text())))
    parts = {id(part) for node in nodes if isinstance(node, ast.JoinedStr) for part in node.values}
    for node in nodes:
        text = None if id(node) in parts else _leading_text(node)  # an f-string is judged whole
        if text is not None and _KERNEL_PATH.match(text):
            found.append(f"{node.lineno}: {text[:60]!r}")
    return found


def test_only_the_kernel_layer_names_proc_or_cgroup_paths():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("_linux/") or relative in KERNEL_PATHS_ALLOWED:
            continue
        if found := kernel_paths(path):
            offenders[relative] = found
    assert offenders == {}, ("read /proc and /sys/fs/cgroup through labkit/_linux/ (a reader there, or "
                             f"_linux.path() for a message): {offenders}")


def test_the_kernel_path_finder_finds_paths_and_only_paths(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('a = f"/proc/{pid}/stat"\nb = "/sys/fs/cgroup"\nc = f"/proc{x}"\n'
                      'd = "/proc only: no tools"\ne = f"see /proc/{pid}/status"\n"""/procfs docs"""\n')
    assert [line.split(":")[0] for line in kernel_paths(sample)] == ["1", "2", "3"]


def test_the_allow_list_names_files_that_exist():
    assert all((PACKAGE / name).exists() for name in KERNEL_PATHS_ALLOWED)
