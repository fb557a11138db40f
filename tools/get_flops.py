"""Print parameters and GMACs of segmentor configs next to the paper's numbers.

    python tools/get_flops.py configs/upernet/incnext_t_ade20k.py [--shape 512 2048]
    python tools/get_flops.py --all          # every shipped config

The input is the paper's size for the paper's configs, else the config's crop size. The
backbone column is the backbone's share of the GMACs.
"""
import quiet_warnings  # noqa: F401  (first: filters known third-party warnings)
import argparse
import glob
import os

from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmseg_incnext.runner.complexity import PAPER_MODEL_SIZES, count_params_and_macs

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'configs')


def shipped_configs():
    """The training configs under configs/ (not bases, deploy configs or the demo's)."""
    paths = glob.glob(os.path.join(CONFIG_ROOT, '*', '*.py'))
    return sorted(path for path in paths
                  if os.path.basename(os.path.dirname(path)) not in ('_base_', 'deploy', 'demo'))


def default_shape(cfg, paper):
    if paper:
        return paper[2:]
    return tuple(cfg.get('crop_size', (512, 512)))


def paper_entry(path):
    rel = os.path.relpath(os.path.abspath(path), CONFIG_ROOT).replace(os.sep, '/')
    return PAPER_MODEL_SIZES.get(rel)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='*', help='config files')
    parser.add_argument('--all', action='store_true', help='every shipped config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: the paper\'s size for the config, '
                        'else its crop size)')
    args = parser.parse_args()
    configs = list(args.configs)
    if args.all:
        configs += shipped_configs()
    if not configs:
        parser.error('give config files or --all')

    init_default_scope('mmseg')
    print(f'{"config":48} {"input":>9} {"params (M)":>11} {"GMACs":>9} {"backbone":>9}   '
          'paper (M / GMACs)')
    for path in configs:
        paper = paper_entry(path)
        cfg = Config.fromfile(path)
        shape = tuple(args.shape) if args.shape else default_shape(cfg, paper)
        params, macs, backbone_macs = count_params_and_macs(cfg, shape)
        reference = f'{paper[0]} / {paper[1]}' if paper and shape == paper[2:] else '-'
        name = os.path.relpath(path, os.path.dirname(CONFIG_ROOT))
        print(f'{name:48} {shape[0]:>4}x{shape[1]:<4} {params / 1e6:>11.2f} '
              f'{macs / 1e9:>9.1f} {backbone_macs / 1e9:>9.1f}   {reference}')


if __name__ == '__main__':
    main()
