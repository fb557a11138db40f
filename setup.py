import os

from setuptools import find_packages, setup

setup(
    name='mmseg-incnext',
    version='0.1.0',
    description='InceptionNeXt backbones for MMSegmentation (semantic segmentation on ADE20K)',
    long_description=(open('README.md', encoding='utf-8').read()
                      if os.path.exists('README.md') else ''),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['mmseg_incnext', 'mmseg_incnext.*']),
    install_requires=[
        'torch>=2.1',
        'mmcv>=2.0.0rc4,<2.2.0',
        'mmengine>=0.10.0,<1.0.0',
        'mmsegmentation==1.2.2',
        'ftfy',  # imported by mmseg but not declared by it
        'regex',  # imported by mmseg but not declared by it
        'numpy',
        'Pillow',
        'safetensors',
        # mmengine 0.10.7 imports pkg_resources (gone in setuptools 81, absent from a
        # Python 3.12 venv) to resolve `mmseg::` config bases, without declaring it.
        'setuptools<81',
    ],
    extras_require={
        'tests': ['pytest', 'timm>=1.0', 'mmpretrain==1.2.0', 'onnx', 'onnxruntime',
                  'openvino', 'thop', 'ptflops', 'torchinfo',  # the FLOP counters users run
                  'cityscapesscripts'],
        # tools/prepare_cityscapes.py: the official label table (as mmseg's converter)
        'cityscapes': ['cityscapesscripts'],
        # the reference implementation and mmseg's ConvNeXt peer, compared against
        'benchmark': ['timm>=1.0', 'mmpretrain==1.2.0'],
        'mmpretrain': ['mmpretrain==1.2.0'],
        'deploy': ['onnx', 'onnxruntime'],  # tools/export_onnx.py, .onnx in test/demo
        # OpenVINO runs the .onnx files (fp32, bf16, the int8 QDQ file): --backend openvino
        'openvino': ['openvino'],
        # configs/mask2former/: mmseg's Mask2Former head is built from mmdet's modules;
        # mmdet 3.3.0 is the last release accepting mmcv 2.1.0 (it requires mmcv < 2.2).
        'mask2former': ['mmdet==3.3.0'],
        # mmdeploy's export (configs/deploy/, docs/deploy.md); legacy stack only (Python 3.10,
        # torch 2.1, numpy < 2): its ONNX Runtime custom-op library is built for 1.15.1.
        'mmdeploy': ['mmdeploy==1.3.1', 'mmdeploy-runtime==1.3.1', 'onnx',
                     'onnxruntime==1.15.1'],
    },
    zip_safe=False,
)
