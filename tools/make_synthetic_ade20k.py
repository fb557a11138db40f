"""Write a small synthetic dataset in mmseg's ADE20K layout (see mmseg_incnext.datasets.synthetic).

    python tools/make_synthetic_ade20k.py data/synthetic_ade --train 40 --val 10 [--hard]
"""
import argparse

from mmseg_incnext.datasets.synthetic import make_synthetic_ade20k


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='output folder (gets images/ and annotations/)')
    parser.add_argument('--train', type=int, default=40, help='training images')
    parser.add_argument('--val', type=int, default=10, help='validation images')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--hard', action='store_true',
                        help='harder scenes: more, similar-looking classes and more noise')
    args = parser.parse_args()
    make_synthetic_ade20k(args.root, args.train, args.val, seed=args.seed, hard=args.hard)
    print(f'wrote {args.train} training and {args.val} validation images to {args.root}')


if __name__ == '__main__':
    main()
