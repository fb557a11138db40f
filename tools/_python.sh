# Sourced by the launch scripts: the Python to use (PYTHON, else the repo's .venv, else python).
_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$_REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$_REPO_ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHONPATH="$_REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
