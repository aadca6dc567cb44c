from setuptools import find_packages, setup

setup(
    name="emmcil",
    version="0.1.0",
    description="Exemplar Masking for Multimodal Incremental Learning (reproduction of arXiv 2412.09549)",
    license="MIT",
    packages=find_packages(include=["emmcil", "emmcil.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4", "torchvision", "pytorch-lightning>=2.2", "transformers>=4.40", "timm>=1.0",
        "sacred>=0.8.4", "setuptools<81", "filelock>=3.0", "tensorboardX", "einops", "pyarrow>=14", "pandas",
        "pillow", "tqdm", "matplotlib", "safetensors",
    ],
    # wandb=True logs to Weights & Biases; tensorboard: the viewer of logs/tensorboard (the writer, tensorboardX, is
    # installed anyway): pip install -e ".[tensorboard]"
    extras_require={"wandb": ["wandb"], "tensorboard": ["tensorboard"]},
)
