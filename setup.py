from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent

setup(
    name="radiodiff-vae",
    version="0.1.0",
    description="RadioDiff VAE: a diffusers-style VAE-GAN that compresses radio maps into a small latent.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["radiodiff_vae", "radiodiff_vae.*"]),
    package_data={"radiodiff_vae": ["templates/*.md"]},
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "diffusers>=0.36",  # AutoencoderMixin; docs/architecture.md "Supported versions"
        "accelerate>=1.1",  # DataLoaderConfiguration(data_seed=...)
        "datasets>=4.3",  # Dataset.from_generator(fingerprint=...)
        "huggingface_hub>=0.34",
        "filelock",  # the output-folder lock of training (also a dependency of huggingface_hub)
        "safetensors>=0.4.3",
        "lpips>=0.1.4",
        "numpy",
        "pillow",
        "pyyaml",
        "tqdm",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={
        "dev": ["pytest>=8", "scikit-image>=0.22"],
        # Sionna RT ray tracing for `radiodiff-vae make-raytraced` (CPU via Dr.Jit's LLVM backend: docs/data.md)
        "raytrace": ["sionna-rt>=2.2"],
    },
    entry_points={"console_scripts": ["radiodiff-vae=radiodiff_vae.cli:main"]},
)
