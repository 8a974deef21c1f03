"""The import graph of segkit, read from the source with `ast`: no circles, and no command importing another."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "segkit"

# The modules that `python -m segkit.<command>` runs (and `segkit <command>` dispatches to).
COMMANDS = {"segkit.train", "segkit.eval", "segkit.predict", "segkit.export", "segkit.summary", "segkit.lr_find",
            "segkit.bench.__main__", "segkit.data_check", "segkit.tradeoff"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The segkit modules that `path` imports anywhere (functions too), except under `if TYPE_CHECKING:`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # `from segkit.models import encoders` imports a module; `from segkit.models import build_model` the package
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_command_exists():
    assert COMMANDS <= set(import_graph())


def test_no_command_imports_another_command():
    graph = import_graph()
    offending = {command: sorted(graph[command] & COMMANDS) for command in COMMANDS if graph[command] & COMMANDS}
    assert offending == {}


def test_no_library_module_imports_a_command():
    graph = import_graph()
    offending = {module: sorted(targets & COMMANDS) for module, targets in graph.items()
                 if module not in COMMANDS and module != "segkit.cli" and targets & COMMANDS}
    assert offending == {}


def test_the_import_graph_has_no_circle():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
