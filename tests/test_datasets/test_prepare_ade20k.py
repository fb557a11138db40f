"""tools/prepare_ade20k.py: unpacking the official zip into mmseg's layout and checking it."""
import os
import sys
import zipfile

import pytest

from tests.helpers import run_command

# Stack-independent (unzipping and laying out files): run once, by the current stack.
pytestmark = pytest.mark.stack_independent


def prepare(*args):
    return run_command([sys.executable, 'tools/prepare_ade20k.py', *args])


def zip_dataset(root, path, skip=()):
    with zipfile.ZipFile(path, 'w') as archive:
        for folder, _, files in os.walk(root):
            for name in files:
                if name not in skip:
                    full = os.path.join(folder, name)
                    archive.write(full, os.path.join('ADEChallengeData2016',
                                                     os.path.relpath(full, root)))


def test_unpacks_into_mmseg_layout_and_checks_counts(tiny_ade20k, tmp_path):
    zip_path = tmp_path / 'ADEChallengeData2016.zip'
    unlabelled = sorted(os.listdir(os.path.join(tiny_ade20k, 'annotations', 'validation')))[0]
    zip_dataset(tiny_ade20k, zip_path, skip=(unlabelled, ))
    result = prepare(str(zip_path), '--out', str(tmp_path / 'data'))
    root = tmp_path / 'data' / 'ADEChallengeData2016'
    assert len(os.listdir(root / 'images' / 'training')) == 6
    assert len(os.listdir(root / 'annotations' / 'validation')) == 2
    # The tiny copy is not the real dataset: the check says what is wrong with it.
    assert result.returncode != 0
    assert 'training: 6 images with annotations, expected 20210' in result.stderr
    assert f'validation: no annotation {root}/annotations/validation/{unlabelled}' \
        in result.stderr


def test_bad_zip_and_missing_source(tmp_path):
    bad = tmp_path / 'ADEChallengeData2016.zip'
    bad.write_bytes(b'PK\x03\x04 truncated download')
    result = prepare(str(bad))
    assert result.returncode != 0 and 'not a valid zip file' in result.stderr
    result = prepare(str(tmp_path / 'nowhere.zip'))
    assert result.returncode != 0 and 'nowhere.zip not found' in result.stderr
