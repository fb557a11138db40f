"""The package's modules import each other in one direction (imports inside functions count)."""
import ast
import os

from tests.helpers import REPO_ROOT

PACKAGE = 'mmseg_incnext'


def module_files():
    root = os.path.join(REPO_ROOT, PACKAGE)
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, REPO_ROOT)[:-3].split(os.sep)
                if parts[-1] == '__init__':
                    parts = parts[:-1]
                yield '.'.join(parts), path, name == '__init__.py'


def imported_modules(module, path, is_package, known):
    """The package modules that ``path`` imports anywhere (functions included)."""
    base = module.split('.') if is_package else module.split('.')[:-1]
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            origin = node.module or ''
            if node.level:
                origin = '.'.join(base[:len(base) - node.level + 1] + ([origin] if origin else []))
            # `from package import submodule` depends on the submodule; any other name
            # comes from the module itself.
            names = [f'{origin}.{alias.name}' if f'{origin}.{alias.name}' in known else origin
                     for alias in node.names]
        else:
            continue
        for name in names:
            if name in known and name != module:
                yield name


def test_no_import_cycles():
    modules = {name: (path, is_package) for name, path, is_package in module_files()}
    graph = {name: set(imported_modules(name, path, is_package, modules))
             for name, (path, is_package) in modules.items()}
    state = {}

    def visit(node, trail):
        state[node] = 'open'
        for dep in sorted(graph[node]):
            if state.get(dep) == 'open':
                cycle = trail[trail.index(dep):] + [dep]
                raise AssertionError('import cycle: ' + ' -> '.join(cycle))
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = 'done'

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert 'mmseg_incnext.models.backbones.inceptionnext' in graph  # the walk found the model
