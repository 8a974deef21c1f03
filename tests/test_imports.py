"""The layout of segkit, read from the source with `ast`: a top level of commands only, imports that flow one way
(commands -> tasks -> engine -> checkpoints/config/data/models -> runtime -> utilities), no circle (imports under
`if TYPE_CHECKING:` count too), and a runtime that needs no torch, Lightning, Hydra or OmegaConf."""

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "segkit"

# The modules that `python -m segkit.<command>` runs (and `segkit <command>` dispatches to).
COMMANDS = {"segkit.train", "segkit.eval", "segkit.predict", "segkit.export", "segkit.summary", "segkit.lr_find",
            "segkit.bench.__main__", "segkit.data_check", "segkit.tradeoff", "segkit.runtime.__main__"}
# What segkit/ holds at its top besides the commands: the package, `python -m segkit`, the `segkit` console command
# and the names a script imports.
TOP_LEVEL_NON_COMMANDS = {"__init__", "__main__", "cli", "api"}

# Top to bottom: a module may import modules of its own layer and of the layers below it, never above.
LAYERS = [
    ("commands", {*COMMANDS, "segkit.cli", "segkit.__main__", "segkit.api"}),
    ("tasks", {"segkit.tasks", "segkit.bench"}),
    ("engine", {"segkit.engine", "segkit.callbacks"}),
    ("building blocks", {"segkit.checkpoints", "segkit.config", "segkit.data", "segkit.models"}),
    ("runtime", {"segkit.runtime"}),
    ("utilities", {"segkit.utilities"}),
]
# What a deployment of segkit.runtime does not install.
NOT_IN_RUNTIME = {"torch", "torchvision", "torchmetrics", "lightning", "hydra", "omegaconf", "albumentations"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """The segkit modules and the other top-level packages that `path` imports anywhere (functions and
    `if TYPE_CHECKING:` blocks too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (found if alias.name.startswith("segkit") else external).add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("segkit"):
                external.add(base)
                continue
            for alias in node.names:
                # `from segkit.models import encoders` imports a module; `from segkit.models import build_model` the package
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in found if module in modules and module != name}, {
        module.partition(".")[0] for module in external if module}


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """segkit module -> the segkit modules it imports; segkit module -> the other packages it imports."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph, external = {}, {}
    for path in paths:
        graph[module_name(path)], external[module_name(path)] = imports_of(path, modules)
    return graph, external


def layer(module: str) -> int:
    for index, (_, members) in enumerate(LAYERS):
        if any(module == member or module.startswith(f"{member}.") for member in members):
            return index
    raise AssertionError(f"{module} is in no layer of LAYERS")


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


def with_parent_packages(module: str) -> list[str]:
    """`module` and the packages Python imports before it (segkit.runtime.tta: segkit, segkit.runtime)."""
    parts = module.split(".")
    return [".".join(parts[:length]) for length in range(1, len(parts) + 1)]


def test_the_top_level_holds_only_the_commands():
    top_level = {path.stem for path in PACKAGE.glob("*.py")}
    assert top_level - TOP_LEVEL_NON_COMMANDS == {command.removeprefix("segkit.") for command in COMMANDS
                                                  if command.count(".") == 1}


def test_every_command_exists():
    assert COMMANDS <= set(import_graph()[0])


def test_no_command_imports_another_command():
    graph = import_graph()[0]
    offending = {command: sorted(graph[command] & COMMANDS) for command in COMMANDS if graph[command] & COMMANDS}
    assert offending == {}


def test_imports_flow_down_the_layers_only():
    graph = import_graph()[0]
    upward = {f"{module} ({LAYERS[layer(module)][0]}) imports {target} ({LAYERS[layer(target)][0]})"
              for module, targets in graph.items() if module != "segkit" for target in targets
              if target != "segkit" and layer(target) < layer(module)}
    assert sorted(upward) == []


def test_the_package_itself_imports_nothing():
    assert import_graph()[0]["segkit"] == set()


def test_the_import_graph_has_no_circle():
    assert find_cycle(import_graph()[0]) is None


def test_the_runtime_needs_no_torch_lightning_hydra_or_omegaconf():
    graph, external = import_graph()
    for start in (module for module in graph if module == "segkit.runtime" or module.startswith("segkit.runtime.")):
        seen, todo = set(), with_parent_packages(start)
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += [parent for target in graph[module] for parent in with_parent_packages(target)]
        needed = {module: sorted(external[module] & NOT_IN_RUNTIME) for module in seen if external[module] & NOT_IN_RUNTIME}
        assert needed == {}, f"importing {start} imports {needed}"


def test_the_layer_checks_find_an_upward_import_and_a_circle():
    assert layer("segkit.tasks.train") < layer("segkit.engine.module") < layer("segkit.models.build")
    assert layer("segkit.runtime.session") < layer("segkit.utilities.checks")
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
