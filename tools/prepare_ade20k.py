"""Unpack the official ADEChallengeData2016.zip into mmseg's layout and check it.

    python tools/prepare_ade20k.py /path/to/ADEChallengeData2016.zip [--out data/ade]

gives data/ade/ADEChallengeData2016/{images,annotations}/{training,validation}, the
data_root of the configs. Already unpacked? Pass the folder instead of the zip to only check.
"""
import argparse
import os
import sys
import zipfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from mmseg_incnext.datasets.data_check import SplitSpec, scan_split  # noqa: E402

EXPECTED = {'training': 20210, 'validation': 2000}
NUM_CLASSES = 150  # annotation values 0 (unlabelled) .. 150


def check(root: str) -> None:
    """Every image has its annotation and decodes, sizes agree, labels are in range (the
    check tools/train.py runs), and the counts are the official ones."""
    problems = []
    for split, expected in EXPECTED.items():
        report = scan_split(SplitSpec(split, os.path.join(root, 'images', split),
                                      os.path.join(root, 'annotations', split),
                                      max_label=NUM_CLASSES))
        problems += report.missing + report.bad_files
        if report.pairs and report.pairs != expected:
            problems.append(f'{split}: {report.pairs} images with annotations, expected '
                            f'{expected}')
    if problems:
        raise SystemExit(f'ADE20K check failed ({len(problems)} problems):\n  '
                         + '\n  '.join(problems))
    print(f'ADE20K is ready at {root}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('source', help='ADEChallengeData2016.zip, or an unpacked folder')
    parser.add_argument('--out', default='data/ade', help='where to unpack (default data/ade)')
    args = parser.parse_args()
    if os.path.isdir(args.source):
        check(args.source)
        return
    if not os.path.isfile(args.source):
        raise SystemExit(f'{args.source} not found')
    try:
        with zipfile.ZipFile(args.source) as archive:
            print(f'unpacking {args.source} to {args.out} ...')
            archive.extractall(args.out)
    except zipfile.BadZipFile as err:
        raise SystemExit(f'{args.source} is not a valid zip file ({err}); download it again')
    check(os.path.join(args.out, 'ADEChallengeData2016'))


if __name__ == '__main__':
    main()
