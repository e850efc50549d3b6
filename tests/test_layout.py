"""One-way layers: the package's modules import each other in one direction only.

``_imports`` (leaf) <- ``core`` <- ``reporting`` <- ``integrations`` <- ``cli``; the
root ``__init__``, ``__main__`` and the compatibility shims (``torch``, ``keras``,
``lightning``, ``lenet5_torch``, ``lenet5_keras``) may import anything, and nothing
imports a shim.  Every module is parsed with :mod:`ast` (imports at module level,
in functions, classes and ``if`` blocks; relative imports resolved; string
literals given to ``importlib.import_module``) and the graph is checked for cycles
and upward edges.  Only the import statements themselves are edges: importing
``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, but a package's
``__init__`` that re-exports its own modules would otherwise be a "cycle" with
each of them, so that implicit edge is left out.  The dynamic aliases of
``_legacy_paths`` (strings built at run time) are not edges either; the
subprocess tests below check what they load.

The checker runs on synthetic bad packages too (``test_checker_catches_*``), so
each rule is known to fail when broken.  Compiled modules (``core._pack``,
``core._table``) are nodes without edges: Cython source is not Python.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = "tensorstate_callbacks"
PACKAGE_DIR = Path(importlib.util.find_spec(PACKAGE).origin).parent

# Root modules and what each is; a new root module must be added here.
ROOT_LEAVES = {"_imports", "_legacy_paths"}  # import nothing of the package
SHIMS = {"torch", "keras", "lightning", "pytorch_lightning", "lenet5_torch", "lenet5_keras"}
ROOT_FREE = {"__init__", "__main__"} | SHIMS  # may import anything (but no shim)
# layer -> the layers (and leaf modules) it may import, besides itself
LAYERS = {
    "core": {"_imports"},
    "reporting": {"core", "_imports"},
    "integrations": {"reporting", "core", "_imports"},
    "cli": {"integrations", "reporting", "core", "_imports"},
}


# -- the graph ---------------------------------------------------------------------
def module_files(package_dir: Path, package: str = PACKAGE) -> dict[str, Path | None]:
    """{dotted module name: its .py file, or None for a compiled module}."""
    modules: dict[str, Path | None] = {}
    for path in sorted(package_dir.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        relative = path.relative_to(package_dir)
        if path.suffix == ".py":
            parts = relative.with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
        else:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                if path.name.endswith(suffix):
                    parts = (*relative.parent.parts, path.name[: -len(suffix)])
                    modules.setdefault(".".join((package, *parts)), None)
    return modules


def _is_package(modules: dict, name: str) -> bool:
    path = modules.get(name)
    return path is not None and path.name == "__init__.py"


def _imported_names(tree: ast.AST):
    """(absolute or relative module, names or None, level, line) of every import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, 0, node.lineno
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", [alias.name for alias in node.names], node.level, node.lineno
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__")):
            target = node.args[0].value
            level = len(target) - len(target.lstrip("."))
            yield target.lstrip("."), None, level, node.lineno


def imports_of(name: str, path: Path, modules: dict, package: str = PACKAGE):
    """[(imported module of the package, line)] for module ``name``; an import of
    a name the package does not hold as a module (an alias path, a typo) is
    returned as it is, and fails :func:`unknown_targets`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = name if _is_package(modules, name) else name.rpartition(".")[0]
    found = []
    for module, names, level, line in _imported_names(tree):
        if level:
            base = here.split(".")
            if level - 1 >= len(base):
                raise AssertionError(f"{path}:{line}: relative import beyond the top package")
            base = ".".join(base[: len(base) - (level - 1)])
            module = f"{base}.{module}" if module else base
        if module != package and not module.startswith(package + "."):
            continue
        targets = []
        for imported in names or ():
            if f"{module}.{imported}" in modules:  # from package import submodule
                targets.append(f"{module}.{imported}")
            elif module not in targets:
                targets.append(module)
        found.extend((target, line) for target in targets or [module])
    return found


def build_graph(package_dir: Path = PACKAGE_DIR, package: str = PACKAGE):
    """(modules, {module: {imported module: first line}})."""
    modules = module_files(package_dir, package)
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        if path is None:
            continue
        for target, line in imports_of(name, path, modules, package):
            if target != name:
                graph[name].setdefault(target, line)
    return modules, graph


# -- the rules -----------------------------------------------------------------------
def unknown_targets(modules, graph):
    return [f"{source} imports {target} (line {line}), which is no module of the package"
            for source, edges in graph.items() for target, line in edges.items()
            if target not in modules]


def find_cycles(graph) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each
    as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node):  # iterative, so that deep graphs cannot hit the recursion limit
        work = [(node, iter(sorted(graph.get(node, ()))))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[current] = min(low[current], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[current])
                if low[current] == index[current]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == current:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(graph, set(component)) for component in components]


def _cycle_through(graph, members: set[str]) -> list[str]:
    """A shortest cycle through the first member, inside the component (BFS)."""
    start = min(members)
    previous = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child in members and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle in {members}")  # pragma: no cover


def layer_of(name: str, package: str = PACKAGE) -> str:
    """``core``/``reporting``/``integrations``/``cli``, or the root module's own name."""
    parts = name.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def layer_violations(modules, graph, package: str = PACKAGE) -> list[str]:
    problems = []
    for name in sorted(modules):
        layer = layer_of(name, package)
        if layer not in LAYERS and layer not in ROOT_LEAVES | ROOT_FREE:
            problems.append(f"{name} is in no layer: put it in core/reporting/integrations/cli "
                            "(or classify the new root module in tests/test_layout.py)")
            continue
        for target, line in graph[name].items():
            if target not in modules:
                continue  # reported by unknown_targets
            target_layer = layer_of(target, package)
            where = f"{name} (line {line}) imports {target}"
            if target_layer in SHIMS:
                problems.append(f"{where}: a compatibility shim; import its new home")
            elif layer in ROOT_LEAVES:
                problems.append(f"{where}: {name} is a leaf and imports nothing of the package")
            elif layer in LAYERS and target_layer != layer and target_layer not in LAYERS[layer]:
                problems.append(f"{where}: {layer} may import only "
                                f"{sorted(LAYERS[layer] | {layer})}")
    return problems


# -- the package -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def package_graph():
    return build_graph()


def test_graph_sees_the_known_imports(package_graph):
    """The parser finds what it must (else the rules below would pass vacuously)."""
    modules, graph = package_graph
    assert f"{PACKAGE}.core.counter" in modules and f"{PACKAGE}.core._pack" in modules
    assert f"{PACKAGE}.core.packing" in graph[f"{PACKAGE}.core"]  # __init__ re-export
    # a function-level relative import: _dispatch imports .torch inside integration_for
    assert f"{PACKAGE}.integrations.torch" in graph[f"{PACKAGE}.integrations._dispatch"]
    assert f"{PACKAGE}.core._cuda" in modules
    assert sum(len(edges) for edges in graph.values()) > 40


def test_every_import_names_a_module_of_the_package(package_graph):
    assert unknown_targets(*package_graph) == []


def test_no_import_cycle(package_graph):
    assert find_cycles(package_graph[1]) == []


def test_layers_import_one_way(package_graph):
    assert layer_violations(*package_graph) == []


# -- the checker, on deliberately bad packages ---------------------------------------
def write_package(root: Path, files: dict[str, str]) -> Path:
    package_dir = root / PACKAGE
    for relative, source in files.items():
        path = package_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    for directory in {p.parent for p in package_dir.rglob("*.py")}:
        (directory / "__init__.py").touch()
    return package_dir


GOOD = {
    "__init__.py": "from .core import counter\nfrom .integrations import _dispatch\n",
    "_imports.py": "import importlib\n",
    "core/__init__.py": "from .counter import Counter\n",
    "core/counter.py": "from .. import _imports\nfrom . import packing\nclass Counter: ...\n",
    "core/packing.py": "import numpy\n",
    "reporting/report.py": "from ..core.counter import Counter\n",
    "integrations/_dispatch.py": "def f():\n    from . import torch\n",
    "integrations/torch.py": "import torch\nfrom ..reporting import report\n",
    "cli/__init__.py": "from ..integrations import torch\n",
    "torch.py": "from .integrations.torch import *\n",
}


def test_checker_passes_a_good_package(tmp_path):
    modules, graph = build_graph(write_package(tmp_path, GOOD))
    assert unknown_targets(modules, graph) == []
    assert find_cycles(graph) == []
    assert layer_violations(modules, graph) == []
    assert graph[f"{PACKAGE}.integrations._dispatch"] == {f"{PACKAGE}.integrations.torch": 2}


@pytest.mark.parametrize("bad_file, source, expected", [
    # module-level upward import, relative
    ("core/packing.py", "from ..reporting import report\n", "core may import only"),
    # function-level upward import, absolute
    ("core/packing.py", "def f():\n    import tensorstate_callbacks.integrations.torch\n",
     "core may import only"),
    ("core/packing.py", "from tensorstate_callbacks import StateCounter\n",
     "core may import only"),
    ("reporting/report.py", "from ..integrations import torch\n", "reporting may import only"),
    ("integrations/torch.py", "if True:\n    from ..cli import main\n",
     "integrations may import only"),
    ("integrations/torch.py", "import importlib\nimportlib.import_module('tensorstate_callbacks"
     ".cli')\n", "integrations may import only"),
    ("cli/__init__.py", "from .. import torch\n", "a compatibility shim"),
    ("cli/__init__.py", "from ..lenet5_torch import LeNet5\n", "a compatibility shim"),
    ("__init__.py", "from . import keras\n", "a compatibility shim"),
    ("_imports.py", "from .core import packing\n", "is a leaf"),
    ("newthing.py", "x = 1\n", "is in no layer"),
])
def test_checker_catches_upward_imports(tmp_path, bad_file, source, expected):
    files = {**GOOD, bad_file: source, "keras.py": "", "lenet5_torch.py": ""}
    modules, graph = build_graph(write_package(tmp_path, files))
    problems = layer_violations(modules, graph)
    assert any(expected in problem for problem in problems), problems


def test_checker_catches_cycles(tmp_path):
    files = {**GOOD,
             "core/packing.py": "import numpy\n\ndef later():\n    from .counter import Counter\n",
             "reporting/report.py": "from . import events\n",
             "reporting/events.py": "from .table import x\n",
             "reporting/table.py": "from .report import y\n"}
    cycles = find_cycles(build_graph(write_package(tmp_path, files))[1])
    assert [f"{PACKAGE}.core.counter", f"{PACKAGE}.core.packing",
            f"{PACKAGE}.core.counter"] in cycles
    assert [f"{PACKAGE}.reporting.events", f"{PACKAGE}.reporting.table",
            f"{PACKAGE}.reporting.report", f"{PACKAGE}.reporting.events"] in cycles
    assert len(cycles) == 2


def test_checker_catches_an_import_of_a_package_reexport_from_inside(tmp_path):
    # core/__init__ imports counter; counter importing a name from core/__init__ is a cycle
    files = {**GOOD, "core/counter.py": "from . import Counter as _C\n"}
    cycles = find_cycles(build_graph(write_package(tmp_path, files))[1])
    assert cycles == [[f"{PACKAGE}.core", f"{PACKAGE}.core.counter", f"{PACKAGE}.core"]]


def test_checker_catches_alias_paths_and_typos(tmp_path):
    files = {**GOOD, "reporting/report.py": "from ..states import pack\n",
             "cli/__init__.py": "import tensorstate_callbacks.integrations.tourch\n"}
    problems = unknown_targets(*build_graph(write_package(tmp_path, files)))
    assert len(problems) == 2, problems
    assert any("imports tensorstate_callbacks.states" in problem for problem in problems)


# -- what importing loads, and the old paths -------------------------------------------
FRAMEWORKS = ("torch", "tensorflow", "keras", "lightning", "pytorch_lightning", "jax")
# Lightweight paths: none of these may load a framework.
FRAMEWORK_FREE = [PACKAGE, f"{PACKAGE}.core", f"{PACKAGE}.reporting", f"{PACKAGE}.integrations",
                  f"{PACKAGE}.integrations._dispatch"]


def loaded_after_import(statement: str) -> dict:
    code = (f"import json, sys\n{statement}\n"
            f"print(json.dumps(sorted(m for m in sys.modules\n"
            f"                        if m.split('.')[0] in {FRAMEWORKS!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_package_loads_no_framework():
    assert loaded_after_import("\n".join(f"import {name}" for name in FRAMEWORK_FREE)) == []


def test_the_probe_is_real():
    """The subprocess check above can fail: a loaded framework is seen."""
    fake = "import types\nsys.modules['tensorflow.python'] = types.ModuleType('tensorflow.python')"
    assert loaded_after_import(fake) == ["tensorflow.python"]


# What each path of version 0.1 defined (``git show 259109d:tensorstate_callbacks/<path>.py``:
# its public functions, classes and constants; ``keras`` gave StateSpaceCallback lazily).
OLD_PATHS = {
    "states": ["Layout", "compress_states", "decompress_states", "kernel_readable", "layout",
               "merge_state_axes", "neuron_axis_index", "pack", "pack_layout", "sort_states"],
    "capture": ["DEFAULT_MEMORY_LIMIT", "StateCounter", "StateSpaceMemoryWarning"],
    "metrics": ["aIQ", "efficiency", "entropy", "entropy_of_chunks", "network_efficiency",
                "ratio"],
    "storage": ["RawStateStore", "check_writable"],
    "gpu": ["cupy_available", "pack_cuda"],
    "frameworks": ["build_efficiency_model", "efficiency_layers_of", "integration_for",
                   "reset_efficiency_model"],
    "distributed": ["merge_across_ranks"],
    "keras_callback": ["StateSpaceCallback"],
    "report": ["EpochReport", "LayerStats", "TAG_PREFIX", "efficiency_tag"],
    "tensorboard": ["HISTOGRAM_PREFIX", "IMAGE_TAG", "custom_scalars_layout", "efficiency_image",
                    "open_writer", "write_efficiency_image", "write_hparams", "write_layout",
                    "write_scalars", "write_state_histograms"],
    "events": ["RunMetrics", "find_runs", "read_run"],
    "datasets": ["MNIST_HINT", "load_mnist", "mnist_available"],
    "cli": ["CommandError", "EXTRA_HINT", "build_parser", "demo", "demo_keras", "demo_lightning",
            "format_rows", "main", "report_row", "summary"],
    "torch": ["METHODS", "StateCaptureHook", "build_efficiency_model", "default_neuron_axis",
              "find_modules", "pack_with_torch", "remove_efficiency_probes",
              "reset_efficiency_model"],
    "keras": ["METHODS", "StateCapture", "StateReader", "StateSpaceCallback", "backend_sees_gpu",
              "batches", "build_efficiency_model", "find_layers", "pack_on_device", "probe_name",
              "probe_plan", "reset_efficiency_model"],
    "lightning": ["StateSpaceCallback"],
    "pytorch_lightning": ["StateSpaceCallback"],
    "lenet5_torch": ["LeNet5", "LitLeNet5", "mnist_dataloaders"],
    "lenet5_keras": ["build_lenet5", "compile_lenet5", "mnist_images"],
}
ROOT_NAMES = ["IncompleteCountsError", "StateCounter", "StateSpaceMemoryWarning", "aIQ",
              "build_efficiency_model", "compress_states", "decompress_states", "efficiency",
              "entropy", "network_efficiency", "reset_efficiency_model", "sort_states",
              "__version__"]
# The paths of 0.1 that needed no framework still need none: checked in a fresh
# interpreter.  The others (torch, keras, lightning, lenet5_*, distributed,
# keras_callback) load frameworks that most test files of this process load anyway:
# checked here (the cycle test above stands for the fresh-import order).
OLD_FRAMEWORK_FREE = ["states", "capture", "metrics", "storage", "gpu", "frameworks", "report",
                      "tensorboard", "events", "datasets", "cli"]


def missing_old_names(paths: dict, root: list) -> dict:
    """{old path: what it lacks} ("" for the package root); empty when nothing is lost.
    An alias must be the very module of its new home."""
    import importlib

    import tensorstate_callbacks as package
    from tensorstate_callbacks import _legacy_paths

    missing = {}
    for path, names in paths.items():
        try:
            exec(f"from tensorstate_callbacks.{path} import {', '.join(names)}", {})
        except ImportError as error:
            missing[path] = str(error)
            continue
        new = _legacy_paths.ALIASES.get(path)
        if new and importlib.import_module(f"tensorstate_callbacks.{path}") is not \
                importlib.import_module(f"tensorstate_callbacks.{new}"):
            missing[path] = f"is not the module {new}"
    absent = [name for name in root if not hasattr(package, name)]
    if absent:
        missing[""] = absent
    return missing


def test_old_framework_free_paths_in_a_fresh_interpreter():
    paths = {path: OLD_PATHS[path] for path in OLD_FRAMEWORK_FREE}
    statement = (f"{inspect.getsource(missing_old_names)}\n"
                 f"missing = missing_old_names({paths!r}, {ROOT_NAMES!r})\n"
                 "assert not missing, missing")
    assert loaded_after_import(statement) == []


def test_old_framework_paths_keep_their_names():
    paths = {path: names for path, names in OLD_PATHS.items() if path not in OLD_FRAMEWORK_FREE}
    assert missing_old_names(paths, ROOT_NAMES) == {}


def test_old_paths_check_can_fail():
    missing = missing_old_names({"states": ["pack", "no_such_name"], "capture": ["StateCounter"]},
                                ["StateCounter", "no_such_root_name"])
    assert list(missing) == ["states", ""]
    assert "no_such_name" in missing["states"] and missing[""] == ["no_such_root_name"]


def test_every_old_path_is_checked():
    from tensorstate_callbacks import _legacy_paths

    # cli.py became the package cli/: the same path, no alias needed
    assert set(_legacy_paths.ALIASES) | SHIMS | {"cli"} == set(OLD_PATHS)
