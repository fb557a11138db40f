"""tools/benchmark.py and mmseg_incnext.runner.benchmark: every contender runs (an error row
fails), and the reports add up."""
import json
import os
import re
import sys
from functools import partial

import pytest
import torch

from mmseg_incnext.runner.benchmark import cli
from mmseg_incnext.runner.benchmark.contenders import (BACKBONE_CONVNEXT, BACKBONE_OURS, FPN,
                                                       UPERNET, UPERNET_CONVNEXT,
                                                       backbone_comparisons, export_file_name,
                                                       int8_variants, module_features,
                                                       onnx_comparisons, segmentor_comparisons)
from mmseg_incnext.runner.benchmark.floor import segmentor_macs
from mmseg_incnext.runner.benchmark.report import (NoBound, control_gaps, format_control_gaps,
                                                   format_ratios_over_runs, format_table,
                                                   is_quiet, ratios_over_runs,
                                                   report_upernet_bound, summarise, upernet_bound)
from mmseg_incnext.runner.benchmark.rounds import round_orders
from mmseg_incnext.runner.benchmark.specs import Comparison, ModelSpec, select
from mmseg_incnext.runner.benchmark.timing import measure
from mmseg_incnext.utils.compat import onednn_version
from tests.helpers import REPO_ROOT, run_command

# Stack-independent (the report and its options; the models it times are tested on both
# stacks): run once, by the legacy stack's suite, which has the time to spare.
pytestmark = pytest.mark.legacy_stack_only


def assert_no_error_rows(result):
    errors = [(run['mode'], row['model'], row['layout'], row['error'])
              for run in result['runs'] for row in run['rows'] if row.get('error')]
    assert not errors, errors


def test_benchmark_smoke(tmp_path):
    """The tool runs every contender end to end and reports; the sizes keep it to seconds."""
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, os.path.join(REPO_ROOT, 'tools', 'benchmark.py'), '--sizes', '32',
           '--batch', '2', '--warmup', '0', '--repeats', '1', '--threads', '1',
           '--arch', 'atto', '--only', 'InceptionNeXt-A (ours', '--runs', '2',
           '--json', str(out)]
    proc = run_command(cmd, check=True)
    assert 'x ConvNeXt-T' in proc.stdout and 'deployed' in proc.stdout
    result = json.loads(out.read_text())
    assert_no_error_rows(result)
    # The header and the JSON name the machine as torch reports it.
    assert result['cpu_capability'] == torch.backends.cpu.get_cpu_capability()
    assert result['onednn'] == ('.'.join(map(str, onednn_version())) or None)
    assert proc.stdout.startswith(f"torch {torch.__version__}, CPU {result['cpu_capability']}, "
                                  f"oneDNN {result['onednn']}, device cpu, threads 1, ")
    assert [(run['mode'], run['batch'], run['run']) for run in result['runs']] == [
        (mode, 2, index) for mode in ('infer', 'train') for index in (0, 1)]
    assert 'ratios over 2 runs' in proc.stdout
    summary = result['ratios_over_runs'][0]
    assert (summary['mode'], summary['batch']) == ('infer', 2)
    assert len(summary['ratios']['InceptionNeXt-A (ours)']['timm IncNeXt']) == 2
    assert set(summary['control_gaps']) == {'InceptionNeXt-A (ours)',
                                            'InceptionNeXt-A (ours, no output norms)'}
    # Without --max-control-gap every run counts, and each reports its two control pairs.
    assert all(run['counted'] and len(run['control_gaps']) == 2 for run in result['runs'])
    assert 'and its copy' in proc.stdout and 'measured again' not in proc.stdout
    for run in result['runs']:
        rows = {(r['model'], r['layout']): r for r in run['rows']}
        for key in [('ConvNeXt-T', 'cl'), ('timm-InceptionNeXt-A', 'nchw'),
                    ('InceptionNeXt-A (ours)', 'cl')]:
            assert rows[key]['img_s'] > 0 and rows[key]['peak_mib'] is not None, key
        assert sum(r['best_layout'] for r in run['rows']
                   if r['model'] == 'InceptionNeXt-A (ours)') == 1
    infer = {(r['model'], r['layout']) for r in result['runs'][0]['rows']}
    assert ('InceptionNeXt-A (ours, deployed)', 'nchw') in infer


def one_segmentor_run(tmp_path, *args):
    """tools/benchmark.py at the segmentor level, one 64x64 inference round per contender:
    its stdout and its one run, which has no error row."""
    out = tmp_path / 'seg.json'
    cmd = [sys.executable, os.path.join(REPO_ROOT, 'tools', 'benchmark.py'), '--level',
           'segmentor', '--sizes', '64', '--modes', 'infer', '--layouts', 'cl', '--warmup', '0',
           '--repeats', '1', '--threads', '1', '--no-memory', '--json', str(out), *args]
    proc = run_command(cmd, check=True)
    result = json.loads(out.read_text())
    assert_no_error_rows(result)
    (run, ) = result['runs']
    return proc.stdout, run


def test_benchmark_segmentor_level_runs_and_reports_the_backbone_bound(tmp_path):
    """Every UperNet contender runs, and the bound is reported, or why it is not: at this
    size the ConvNeXt segmentor may time no slower than its backbone alone."""
    stdout, run = one_segmentor_run(tmp_path, '--only', 'UperNet')
    assert {r['model'] for r in run['rows']} == {
        'UperNet-T (ours)', 'UperNet-T (ours, no output norms)',
        'UperNet-T (ours) control copy', 'UperNet-timm-IncNeXt-T', 'UperNet-ConvNeXt-T',
        'UperNet-T (ours) [backbone only]', 'UperNet-ConvNeXt-T [backbone only]'}
    expected = ('UperNet bound not computed: UperNet-ConvNeXt-T' if run['upernet_bound'] is None
                else 'a backbone costing nothing')
    assert expected in stdout, stdout[-2000:]


def test_int8_variants_add_a_table_of_the_other_int8_forms_per_head():
    """--int8-variants: per head, the other int8 forms against the default file and its
    control copy (each form's graph: tests/test_deploy/test_quantize.py)."""
    tables = {c.title: c for c in onnx_comparisons(variants=True)}
    assert set(tables) == {f'{head}, {kind}' for head in ('UperNet', 'FPN')
                           for kind in ('ONNX Runtime', 'ONNX Runtime labels', 'int8 forms')}
    forms = tables['FPN, int8 forms']
    names = [m.name for m in forms.models]
    default = 'FPN-T (ours, ONNX Runtime int8)'
    assert names == [default, f'{default} control copy'] + [
        f'FPN-T (ours, ONNX Runtime int8, {scheme.name})' for scheme in int8_variants()]
    assert len(names) == 7 and 'FPN-T (ours, ONNX Runtime int8, qoperator, per-channel)' in names
    assert all(m.arithmetic == 'int8' for m in forms.models)
    assert list(forms.references) == ['int8 default'] and len(forms.controls) == 1
    assert {c.title for c in onnx_comparisons()} == set(tables) - {'UperNet, int8 forms',
                                                                   'FPN, int8 forms'}


def test_benchmark_onnx_rows_fp32_int8_and_the_int8_control(tmp_path):
    """--onnx: FPN-T's eager path, its fp32 export (logits, logits then argmax, and the labels
    export with a control copy) and its int8 file (with a control copy) each run; the tables
    have their reference columns, the pairs' gaps and the hardware floor."""
    pytest.importorskip('onnxruntime.quantization')
    stdout, run = one_segmentor_run(tmp_path, '--onnx', '--batch', '1',
                                    '--only', 'FPN-T (ours, ONNX', '--profile', '40')
    assert {r['model'] for r in run['rows']} == {
        'FPN-T (ours)', 'FPN-T (ours, ONNX Runtime)', 'FPN-T (ours, ONNX Runtime int8)',
        'FPN-T (ours, ONNX Runtime int8) control copy',
        'FPN-T (ours, ONNX Runtime, logits + argmax)', 'FPN-T (ours, ONNX Runtime, labels output)',
        'FPN-T (ours, ONNX Runtime, labels output) control copy'}
    assert '### FPN, ONNX Runtime' in stdout and 'x ORT fp32' in stdout
    assert '### FPN, ONNX Runtime labels' in stdout and 'x logits + argmax' in stdout
    assert 'FPN-T (ours, ONNX Runtime, labels output) and its copy' in stdout
    assert 'FPN-T (ours, ONNX Runtime int8) and its copy' in stdout, stdout[-2000:]
    # --profile: torch's ops for the eager path, ONNX Runtime's op types for the files
    profiles = profiled_ops(stdout)
    assert any(op.startswith('aten::') for op in profiles['FPN-T (ours) [cl]'])
    fp32 = profiles['FPN-T (ours, ONNX Runtime) [cl]']
    assert 'Conv' in fp32 and 'QLinearConv' not in fp32, profiles
    assert 'QLinearConv' in profiles['FPN-T (ours, ONNX Runtime int8) [cl]'], profiles
    assert 'ArgMax' in profiles['FPN-T (ours, ONNX Runtime, labels output) [cl]'], profiles
    # the hardware floor: FPN-T's MACs at 64x64 over each row's measured peak
    assert '### FPN, ONNX Runtime, infer, 64x64, batch 1: hardware floor' in stdout
    floors = {row['model']: row for row in run['floors']['FPN, ONNX Runtime']}
    assert {name: row['arithmetic'] for name, row in floors.items()} == {
        'FPN-T (ours)': 'fp32', 'FPN-T (ours, ONNX Runtime)': 'fp32',
        'FPN-T (ours, ONNX Runtime int8)': 'int8',
        'FPN-T (ours, ONNX Runtime int8) control copy': 'int8'}
    macs = segmentor_macs('configs/fpn/incnext_t_ade20k.py', (64, 64))
    assert macs == pytest.approx(44e9 * 64 * 64 / 512 ** 2, rel=0.1)  # the paper's 44 G
    for row in floors.values():
        assert row['floor_ms'] == pytest.approx(1e3 * macs / row['peak_macs_per_s'])
        assert row['over_floor'] == pytest.approx(row['ms'] / row['floor_ms'])
    # one peak per number format in a run
    assert len({(row['arithmetic'], row['peak_macs_per_s']) for row in floors.values()}) == 2


def profiled_ops(stdout):
    """--profile's blocks: title -> the op names listed under it."""
    blocks = re.findall(r'^profile: (.+) \([0-9.]+ ms profiled\)\n((?:  .*\n?)+)', stdout,
                        re.MULTILINE)
    return {title: [line.split(' ms  ', 1)[1] for line in lines.splitlines()]
            for title, lines in blocks}


def test_int8_variants_need_onnx():
    with pytest.raises(SystemExit, match='--int8-variants .* add --onnx'):
        cli.main(['--level', 'segmentor', '--int8-variants'])


def test_each_exported_file_has_its_own_name():
    """UperNet's and FPN's configs share a file name; each int8 form and the labels export
    has its own file."""
    from mmseg_incnext.deploy.quantize import Int8Scheme
    schemes = [None, Int8Scheme()] + int8_variants()
    names = {export_file_name(config, scheme) for config in (UPERNET, FPN) for scheme in schemes}
    names |= {export_file_name(config, output='labels') for config in (UPERNET, FPN)}
    assert len(names) == 2 * (len(schemes) + 1) == 16


def test_a_failing_contender_is_reported_and_the_others_are_timed():
    def broken():
        raise RuntimeError('cannot build\nsecond line')

    ok = ModelSpec('conv', partial(torch.nn.Conv2d, 3, 4, 3), module_features)
    bad = ModelSpec('broken', broken, module_features)
    results = measure([bad, ok], ['nchw', 'cl'], 'train', torch.randn(2, 3, 8, 8), warmup=0,
                      repeats=2, memory=False)
    by_name = {(m.model.name, m.layout): m for m in results}
    assert by_name[('broken', 'cl')].error == 'RuntimeError: cannot build'
    assert by_name[('broken', 'cl')].seconds == []
    assert len(by_name[('conv', 'nchw')].seconds) == 2 and by_name[('conv', 'nchw')].error is None
    rows = summarise(results, batch=2)
    table = format_table('t', Comparison('t', (ok, bad), {'conv': (ok, )}), rows)
    assert '| broken | nchw | RuntimeError: cannot build |' in table
    with pytest.raises(AssertionError):
        assert_no_error_rows(dict(runs=[dict(mode='train', rows=rows)]))


def test_rounds_balance_positions_and_predecessors():
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            calls.append(self.name)
            return x

    specs = [ModelSpec(name, partial(Recorder, name), module_features) for name in 'abcd']
    measure(specs, ['nchw'], 'infer', torch.randn(1, 3, 4, 4), warmup=0, repeats=4,
            memory=False)
    rounds = [calls[i:i + 4] for i in range(0, 16, 4)]
    assert rounds == [list('abdc'), list('bcad'), list('cdba'), list('dacb')]
    for n in (2, 3, 4, 5, 7):
        times = 2 if n % 2 else 1  # an odd n needs 2n rounds
        orders = round_orders(n, times * n)
        assert all(sorted(order) == list(range(n)) for order in orders)
        for model in range(n):  # every position, equally often
            assert sorted(order.index(model) for order in orders) == sorted(
                list(range(n)) * times)
        pairs = [(order[i - 1], order[i]) for order in orders for i in range(1, n)]
        expected = [(a, b) for a in range(n) for b in range(n) if a != b]
        assert sorted(pairs) == sorted(expected * times)  # every predecessor, equally often
    assert round_orders(3, 8)[6:] == round_orders(3, 2)


def test_ratios_over_runs_take_each_runs_best_layout():
    ours = ModelSpec('ours', None, None)
    ref = ModelSpec('ref', None, None)
    comparison = Comparison('t', (ours, ref), {'ref': (ref, )})

    def rows(ours_speeds, ref_speed):
        return ([dict(model='ours', layout=layout, img_s=v)
                 for layout, v in zip(('nchw', 'cl'), ours_speeds)]
                + [dict(model='ref', layout='cl', img_s=ref_speed)])
    runs = [rows((1.0, 3.0), 2.0), rows((4.0, 2.0), 2.0), rows((2.0, 2.2), 2.0)]
    ratios = ratios_over_runs(comparison, runs)
    assert ratios['ours']['ref'] == pytest.approx([1.5, 2.0, 1.1])
    table = format_ratios_over_runs('t', ratios)
    assert '| ours | 1.50 / 2.00 / 1.10 | 1.50 |' in table
    failed = [rows((1.0, 3.0), 2.0), [dict(model='ours', layout='cl', error='boom')]]
    assert ratios_over_runs(comparison, failed)['ours']['ref'] == [1.5, None]


def test_only_keeps_the_references_and_refuses_an_unknown_name():
    comparisons = backbone_comparisons('atto')
    (kept, ) = select(comparisons, ['deployed'])
    assert [m.name for m in kept.models] == [
        'InceptionNeXt-A (ours, deployed)', 'timm-InceptionNeXt-A', 'ConvNeXt-T',
        'mmpretrain-ConvNeXt-T']
    assert 'InceptionNeXt-A (ours, no output norms)' in [
        m.name for m in comparisons[0].models]
    assert [c.title for c in select(segmentor_comparisons(), ['FPN'])] == ['FPN']
    with pytest.raises(SystemExit, match='matches no model'):
        select(comparisons, ['no such model'])


def test_control_pairs_measure_the_noise_and_gate_the_runs():
    ours, copy, ref = (ModelSpec(name, None, None) for name in ('a', 'a copy', 'ref'))
    comparison = Comparison('t', (ours, copy, ref), {'ref': (ref, )}, ((ours, copy), ))
    rows = [dict(model='a', layout='cl', img_s=1.0), dict(model='a', layout='nchw', img_s=0.5),
            dict(model='a copy', layout='cl', img_s=1.04), dict(model='ref', layout='cl', img_s=1)]
    gaps = control_gaps(comparison, rows)
    assert gaps == {'a': pytest.approx(1 - 1 / 1.04)}
    assert is_quiet(gaps, 4) and is_quiet(gaps, None)
    assert not is_quiet(gaps, 3)
    assert not is_quiet({'a': None}, 3)  # a pair that failed to run counts as noisy
    assert '(over 3%: measured again)' in format_control_gaps(gaps, 3)
    assert comparison.with_models(lambda m: m is ours).controls == ()
    assert comparison.with_models(lambda m: True).controls == ((ours, copy), )
    with pytest.raises(SystemExit, match='needs a control pair'):
        cli.main(['--arch', 'atto', '--only', 'deployed', '--max-control-gap', '3'])


def test_the_upernet_bound_follows_from_the_rows_or_says_why_not():
    def rows(full, convnext_alone, ours_alone):
        return [dict(model=UPERNET_CONVNEXT.name, layout='cl', img_s=full),
                dict(model=UPERNET_CONVNEXT.name, layout='nchw', img_s=full / 2),
                dict(model=BACKBONE_CONVNEXT.name, layout='cl', img_s=convnext_alone),
                dict(model=BACKBONE_OURS.name, layout='cl', img_s=ours_alone)]

    # 0.5 s/img in all, 0.2 of it the ConvNeXt backbone: the head takes 0.3 s (60%).
    bound = upernet_bound(rows(2.0, 5.0, 10.0))
    assert bound['head_s_per_img'] == pytest.approx(0.3)
    assert bound['head_share'] == pytest.approx(0.6)
    assert bound['max_speedup'] == pytest.approx(0.5 / 0.3)
    assert bound['predicted_speedup'] == pytest.approx(0.5 / (0.3 + 0.1))
    reported, line = report_upernet_bound(rows(2.0, 5.0, 10.0))
    assert reported == bound
    assert line.startswith('UperNet head and rest') and '1.67x' in line and '1.25x' in line
    # The segmentor timed no slower than its backbone alone: no bound, and the line says so.
    with pytest.raises(NoBound, match='timed no slower than'):
        upernet_bound(rows(5.0, 4.0, 10.0))
    assert report_upernet_bound(rows(5.0, 4.0, 10.0)) == (
        None, 'UperNet bound not computed: UperNet-ConvNeXt-T (5.00 img/s) timed no slower '
        'than UperNet-ConvNeXt-T [backbone only] (4.00 img/s): the head\'s time is below the '
        'noise (more --repeats)')
    failed = rows(2.0, 5.0, 10.0)[:2] + [dict(model=BACKBONE_CONVNEXT.name, layout='cl',
                                              error='boom')]
    assert report_upernet_bound(failed) == (
        None, 'UperNet bound not computed: UperNet-ConvNeXt-T [backbone only], '
        'UperNet-T (ours) [backbone only] not timed')
    assert report_upernet_bound([dict(model='FPN-T (ours)', layout='cl', img_s=1.0)]) == (
        None, None)  # a run without the bound's models reports none
