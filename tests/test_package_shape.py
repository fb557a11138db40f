"""The package's modules import each other in one direction (imports inside functions count)."""
import ast
import os

import pytest

from tests.helpers import REPO_ROOT

# Stack-independent (the package layout, read from source): run once, by the current stack.
pytestmark = pytest.mark.stack_independent

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


# Which of the package's folders each folder may import, as mmseg's own layers: utils at the
# bottom, the model above it, training and data beside the model, deployment on top of the
# model (int8 calibration reads datasets), and the tools' runner on top of everything. The
# package root only registers.
ALLOWED = {
    'utils': {'utils'},
    'models': {'models', 'utils'},
    'engine': {'engine', 'models', 'utils'},
    'datasets': {'datasets', 'utils'},
    'deploy': {'deploy', 'models', 'datasets', 'utils'},
    'runner': {'runner', 'deploy', 'datasets', 'engine', 'models', 'utils'},
}


def test_folders_import_each_other_in_one_direction():
    modules = {name: (path, is_package) for name, path, is_package in module_files()}
    folders = {name.split('.')[1] for name in modules if name.count('.') >= 1}
    assert folders == set(ALLOWED), 'a folder was added or removed: update ALLOWED'
    wrong = []
    for name, (path, is_package) in modules.items():
        if name == PACKAGE:
            continue
        folder = name.split('.')[1]
        for dep in imported_modules(name, path, is_package, modules):
            parts = dep.split('.')
            if len(parts) > 1 and parts[1] not in ALLOWED[folder]:
                wrong.append(f'{name} imports {dep}')
    assert not wrong, wrong


def test_importing_the_package_only_registers():
    import subprocess
    import sys
    code = ('import sys, mmseg_incnext; print(sorted(m for m in sys.modules '
            'if m.startswith("mmseg_incnext.")))')
    loaded = eval(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                                 check=True, cwd=REPO_ROOT).stdout)
    assert not [m for m in loaded if m.startswith(('mmseg_incnext.runner',
                                                   'mmseg_incnext.deploy',
                                                   'mmseg_incnext.utils.stack_fixes'))], loaded
    assert 'mmseg_incnext.engine.hooks.training_hooks' in loaded
