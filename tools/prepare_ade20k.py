"""Unpack the official ADEChallengeData2016.zip into mmseg's layout and check it.

    python tools/prepare_ade20k.py /path/to/ADEChallengeData2016.zip [--out data/ade]

gives data/ade/ADEChallengeData2016/{images,annotations}/{training,validation}, the
data_root of the configs. Already unpacked? Pass the folder instead of the zip to only check.
"""
import argparse
import os
import zipfile

EXPECTED = {'training': 20210, 'validation': 2000}


def check(root: str) -> None:
    problems = []
    for split, expected in EXPECTED.items():
        image_dir = os.path.join(root, 'images', split)
        label_dir = os.path.join(root, 'annotations', split)
        if not os.path.isdir(image_dir) or not os.path.isdir(label_dir):
            problems.append(f'missing {image_dir} or {label_dir}')
            continue
        images = {os.path.splitext(f)[0] for f in os.listdir(image_dir) if f.endswith('.jpg')}
        labels = {os.path.splitext(f)[0] for f in os.listdir(label_dir) if f.endswith('.png')}
        if len(images) != expected:
            problems.append(f'{image_dir}: {len(images)} images, expected {expected}')
        unlabelled = sorted(images - labels)
        if unlabelled:
            problems.append(f'{len(unlabelled)} {split} images have no annotation, e.g. '
                            f'{unlabelled[0]}.jpg')
    if problems:
        raise SystemExit('ADE20K check failed:\n  ' + '\n  '.join(problems))
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
