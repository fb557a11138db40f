"""The deploy runtimes are optional packages: each is imported when first needed, with an
error that names the extra installing it."""
import importlib


def import_runtime(package: str, extra: str):
    """The ``package`` module, or an ImportError that names the extra installing it."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ImportError(f'the {package} backend needs the {package} package, which cannot '
                          f'be imported here ({err}): pip install -e .[{extra}]') from err
