"""Convert the official Cityscapes archives into mmseg's layout and check the result.

    python tools/prepare_cityscapes.py leftImg8bit_trainvaltest.zip gtFine_trainvaltest.zip \
        [--out data/cityscapes]

gives data/cityscapes/leftImg8bit/{train,val}/CITY/*_leftImg8bit.png and
data/cityscapes/gtFine/{train,val}/CITY/*_gtFine_labelTrainIds.png (19 classes, 255 ignored),
the data_root of the Cityscapes configs. Already unpacked? Pass the folder that holds
leftImg8bit/ and gtFine/ instead of the zips (it may be --out itself). The result is checked
as tools/train.py checks it, and the pair counts against the official 2975 train / 500 val
(``--any-counts`` leaves the counts unchecked: a subset, or tools/make_synthetic_cityscapes.py's
copy).
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from mmseg_incnext.datasets.cityscapes_prep import (  # noqa: E402
    OFFICIAL_COUNTS, CityscapesPrepError, check, convert)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('sources', nargs='+',
                        help='leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip, or '
                        'folders they were unpacked into')
    parser.add_argument('--out', default='data/cityscapes',
                        help='the dataset root to write (default data/cityscapes)')
    parser.add_argument('--workers', type=int, default=None,
                        help='conversion processes (default: one per core)')
    parser.add_argument('--any-counts', action='store_true',
                        help='accept other pair counts than the official 2975 train / 500 val')
    args = parser.parse_args()
    print(f'converting {" and ".join(args.sources)} into {args.out} ...')
    try:
        counts = convert(args.sources, args.out, args.workers)
    except CityscapesPrepError as err:
        raise SystemExit(f'{type(err).__name__}: {err}') from None
    print(f'wrote {counts["train"]} train and {counts["val"]} val pairs')
    problems = check(args.out, None if args.any_counts else OFFICIAL_COUNTS)
    if problems:
        raise SystemExit(f'Cityscapes check failed ({len(problems)} problems):\n  '
                         + '\n  '.join(problems))
    print(f'Cityscapes is ready at {args.out}')


if __name__ == '__main__':
    main()
