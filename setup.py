"""repseg: RepVGG backbones for mmsegmentation."""
import os.path as osp

from setuptools import find_packages, setup

here = osp.dirname(osp.abspath(__file__))
version = {}
with open(osp.join(here, 'repseg', 'version.py')) as f:
    exec(f.read(), version)

setup(
    name='repseg',
    version=version['__version__'],
    description='RepVGG backbones for mmsegmentation: train multi-branch, '
    'deploy a plain stack of 3x3 convolutions',
    long_description=open(osp.join(here, 'README.md')).read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.8',
    packages=find_packages(include=['repseg', 'repseg.*']),
    # torchvision is deliberately NOT a dependency: the PyPI build is built
    # against CUDA torch and fails to import next to CPU torch. GPU users
    # install the torchvision matching their torch themselves.
    install_requires=[
        'torch>=2.0',
        'mmengine>=0.10.0,<0.11.0',
        'mmcv>=2.1.0,<2.2.0',
        'mmsegmentation>=1.2.0,<1.3.0',
        'opencv-python-headless',
        'numpy',
        'matplotlib',
        'ftfy',
        'regex',
        'safetensors',
    ],
    extras_require={
        'tests': ['pytest>=7', 'pytest-xdist>=3', 'hypothesis>=6', 'onnx',
                  'onnxruntime', 'openvino', 'nncf', 'ray[data,serve]', 'psutil'],
        'ray': ['ray[data,serve]'],
        'onnx': ['onnx', 'onnxruntime'],
        'openvino': ['onnx', 'openvino', 'nncf'],
        'serve': ['fastapi', 'uvicorn', 'python-multipart', 'httpx'],
    },
    entry_points={
        'console_scripts': ['repseg-serve = repseg.serve.cli:main'],
    },
    zip_safe=False,
)
