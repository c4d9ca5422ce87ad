"""MoodLake: emotions evoked by social-media posts, measured on Spark, Delta Lake and PyTorch.

The library lives in lib/moodlake and the PyTorch architectures in models/, installed as the
subpackage ``moodlake.models``. Pinned third-party versions live in requirements.txt (installed
by ``make setup``); install_requires names only what the package imports, unpinned, so that an
installation into an existing Spark environment does not fight its pins.
"""
from setuptools import setup, find_packages

lib_packages = find_packages("lib")
model_packages = ["moodlake.models"] + [
    "moodlake.models." + p for p in find_packages("models")
]

setup(
    name="moodlake",
    version="0.1.0",
    description="Batch analytics of the emotions that social-media posts evoke",
    python_requires=">=3.10",
    package_dir={"": "lib", "moodlake.models": "models"},
    packages=lib_packages + model_packages,
    package_data={"moodlake": ["py.typed", "java/*.java", "log4j2.properties"]},
    install_requires=[
        "pyspark", "delta-spark", "pyarrow", "numpy", "pandas", "pyyaml", "pillow",
        "flickrapi", "requests", "torch", "torchvision", "petastorm",
        "pyhive", "thrift", "thrift-sasl", "pure-sasl", "nbclient", "nbformat", "nbconvert", "ipykernel",
    ],
    entry_points={"console_scripts": ["moodlake = moodlake.cli:main"]},
)
