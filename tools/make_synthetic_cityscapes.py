"""Write a small synthetic Cityscapes as its official archives unpack, or as the two zips.

    python tools/make_synthetic_cityscapes.py data/synthetic_cityscapes_raw [--zip-to DIR]
    python tools/prepare_cityscapes.py data/synthetic_cityscapes_raw --out data/cityscapes \
        --any-counts

(see mmseg_incnext.datasets.synthetic; without ``--any-counts`` the prepare step converts, then
fails because the counts are not the official ones.)
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from mmseg_incnext.datasets.synthetic import (make_synthetic_cityscapes,  # noqa: E402
                                              zip_synthetic_cityscapes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='output folder (gets leftImg8bit/ and gtFine/)')
    parser.add_argument('--per-city', type=int, default=2, help='images per city')
    parser.add_argument('--height', type=int, default=64)
    parser.add_argument('--width', type=int, default=128)
    parser.add_argument('--zip-to', help='also pack the official archives into this folder')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    make_synthetic_cityscapes(args.root, args.per_city, (args.height, args.width),
                              seed=args.seed)
    print(f'wrote synthetic Cityscapes to {args.root}')
    if args.zip_to:
        for path in zip_synthetic_cityscapes(args.root, args.zip_to):
            print(f'packed {path}')


if __name__ == '__main__':
    main()
