"""tools/benchmark.py: every contender runs (an error row fails), and the reports add up."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


def assert_no_error_rows(result):
    errors = [(run['mode'], row['model'], row['layout'], row['error'])
              for run in result['runs'] for row in run['rows'] if row.get('error')]
    assert not errors, errors


def test_benchmark_smoke(tmp_path):
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, os.path.join(REPO_ROOT, 'tools', 'benchmark.py'), '--sizes', '32',
           '--batch', '2', '3', '--warmup', '0', '--repeats', '2', '--threads', '1',
           '--arch', 'atto', '--only', 'InceptionNeXt-A (ours', '--json', str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'x ConvNeXt-T' in proc.stdout and 'unfused' in proc.stdout
    result = json.loads(out.read_text())
    assert_no_error_rows(result)
    assert [(run['mode'], run['batch']) for run in result['runs']] == [
        ('infer', 2), ('train', 2), ('infer', 3), ('train', 3)]
    for run in result['runs']:
        rows = {(r['model'], r['layout']): r for r in run['rows']}
        for key in [('ConvNeXt-T', 'cl'), ('timm-InceptionNeXt-A', 'nchw'),
                    ('InceptionNeXt-A (ours)', 'cl')]:
            assert rows[key]['img_s'] > 0 and rows[key]['peak_mib'] is not None, key
        assert len(rows[('InceptionNeXt-A (ours)', 'cl')]) and \
            sum(r['best_layout'] for r in run['rows']
                if r['model'] == 'InceptionNeXt-A (ours)') == 1
    infer = {(r['model'], r['layout']) for r in result['runs'][0]['rows']}
    assert ('InceptionNeXt-A (ours, unfused)', 'nchw') in infer


def test_benchmark_segmentor_level_reports_the_backbone_bound(tmp_path):
    out = tmp_path / 'seg.json'
    cmd = [sys.executable, os.path.join(REPO_ROOT, 'tools', 'benchmark.py'), '--level',
           'segmentor', '--sizes', '64', '--modes', 'infer', '--layouts', 'cl', '--warmup', '1',
           '--repeats', '1', '--threads', '1', '--no-memory', '--only', 'UperNet',
           '--json', str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert_no_error_rows(result)
    (run, ) = result['runs']
    speeds = {r['model']: r['img_s'] for r in run['rows']}
    assert set(speeds) == {'UperNet-T (ours)', 'UperNet-ConvNeXt-T',
                           'UperNet-T (ours) [backbone only]',
                           'UperNet-ConvNeXt-T [backbone only]'}
    bound = run['upernet_bound']
    assert bound is not None, proc.stdout[-2000:]
    # The head's time is the ConvNeXt segmentor's minus its backbone's; the bound follows.
    head = 1 / speeds['UperNet-ConvNeXt-T'] - 1 / speeds['UperNet-ConvNeXt-T [backbone only]']
    assert bound['head_s_per_img'] == pytest.approx(head)
    assert bound['max_speedup'] == pytest.approx(1 / speeds['UperNet-ConvNeXt-T'] / head)
    assert 'a backbone costing nothing' in proc.stdout
