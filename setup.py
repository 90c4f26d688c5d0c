"""repseg: RepVGG backbones for mmsegmentation."""
import os.path as osp

from setuptools import find_packages, setup

here = osp.dirname(osp.abspath(__file__))
version = {}
with open(osp.join(here, 'repseg', 'version.py')) as f:
    exec(f.read(), version)

# what deployed files need: the numpy test pipeline, OpenCV's image and
# video I/O, the progress bar (a file's runtime is an extra)
DEPLOY = ['numpy', 'opencv-python-headless', 'rich']
EXTRAS = {
    # the training stack: training, testing, fusing, exporting and
    # quantizing (configs and checkpoints; nncf makes OpenVINO's INT8
    # files). mmcv must have its compiled ops, which PyPI has no wheel of
    # for recent torch: scripts/install.sh (the training route) builds it
    # before installing this extra. torchvision is deliberately NOT a
    # dependency: the PyPI build is built against CUDA torch and fails to
    # import next to CPU torch (GPU users install the one matching their
    # torch).
    'train': ['torch>=2.0', 'mmengine>=0.10.0,<0.11.0', 'mmcv>=2.1.0,<2.2.0',
              'mmsegmentation>=1.2.0,<1.3.0', 'matplotlib', 'ftfy', 'regex',
              'safetensors', 'onnx', 'nncf'],
    # the runtimes of deployed files (onnx: the class map added to the
    # graph at load)
    'onnxruntime': ['onnxruntime', 'onnx'],
    'openvino': ['openvino'],
    # inference on a Ray cluster (Ray Data), the service on Ray Serve
    'ray': ['ray[data,serve]'],
    # repseg-serve (Pillow reads an upload's header before decoding it)
    'serve': ['fastapi', 'uvicorn', 'python-multipart', 'httpx', 'pillow'],
}
EXTRAS['onnx'] = EXTRAS['onnxruntime']   # its old name
# everything the test-suite needs (scripts/install.sh installs it)
EXTRAS['tests'] = list(dict.fromkeys(sum(EXTRAS.values(), []) + [
    'pytest>=7', 'pytest-xdist>=3', 'hypothesis>=6', 'psutil']))

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
    # The base install is the deployment install: what running deployed
    # files (.onnx, OpenVINO .xml; fp32 or INT8) with repseg-infer needs,
    # plus the runtime extra of the file (docs/deployment.md):
    #   pip install "repseg[openvino]"          (or [onnxruntime]; [serve])
    install_requires=DEPLOY,
    extras_require=EXTRAS,
    entry_points={
        'console_scripts': ['repseg-infer = repseg.infer.cli:main',
                            'repseg-serve = repseg.serve.cli:main'],
    },
    zip_safe=False,
)
