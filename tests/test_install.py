"""`pip install -e .` into a fresh venv without setuptools (Python 3.12 venvs have none):
the plugin brings the pkg_resources mmengine needs to resolve our configs' `mmseg::` bases.

Offline: the venv sees this suite's packages (linked, setuptools left out), and pip takes
setuptools from a wheel repacked here from the installed distribution.
"""
import importlib.metadata
import os
import sys
import sysconfig
import zipfile

import pytest

from tests.helpers import REPO_ROOT, run_command

# Python 3.12's venvs are the ones without setuptools.
pytestmark = pytest.mark.current_stack_only

SETUPTOOLS_PARTS = ('setuptools', 'pkg_resources', '_distutils_hack', 'distutils-precedence.pth')


def repack(name, folder) -> None:
    """The installed distribution ``name`` as a wheel in ``folder`` (for --find-links)."""
    dist = importlib.metadata.distribution(name)
    name = f'{name}-{dist.version}-py3-none-any.whl'
    with zipfile.ZipFile(os.path.join(folder, name), 'w') as wheel:
        for file in dist.files:
            if '__pycache__' not in str(file) and not str(file).startswith('..'):
                wheel.write(dist.locate_file(file), str(file))


def test_editable_install_without_setuptools_loads_the_shipped_configs(tmp_path):
    venv = tmp_path / 'venv'
    run_command([sys._base_executable, '-m', 'venv', str(venv)], check=True)
    python = str(venv / 'bin' / 'python')
    run_command([python, '-m', 'pip', 'uninstall', '-q', '-y', 'setuptools'])
    site = run_command([python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
                       check=True).stdout.strip()
    ours = sysconfig.get_path('purelib')
    for entry in os.listdir(ours):  # this suite's packages, but setuptools and the plugin
        if not entry.startswith(SETUPTOOLS_PARTS + ('pip', 'mmseg_incnext', 'mmseg-incnext',
                                                    'mmseg_incnext-', '__editable__')) \
                and not os.path.exists(os.path.join(site, entry)):
            os.symlink(os.path.join(ours, entry), os.path.join(site, entry))
    load = [python, '-c', 'from mmengine.config import Config; '
            'print(Config.fromfile("configs/fpn/incnext_t_ade20k.py").model.backbone.type)']
    before = run_command(load)
    assert before.returncode != 0 and 'pkg_resources' in before.stderr, before.stderr[-2000:]

    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    repack('setuptools', str(wheels))
    run_command([python, '-m', 'pip', 'install', '-q', '--no-index', '--find-links',
                 str(wheels), '-e', REPO_ROOT], check=True)
    assert run_command(load, check=True).stdout.split()[-1] == 'InceptionNeXt'
