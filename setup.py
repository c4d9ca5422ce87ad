"""MoodLake: emotions evoked by social-media posts, measured on Spark, Delta Lake and PyTorch.

The library lives in lib/moodlake and the PyTorch architectures in models/, installed as the
subpackage ``moodlake.models``: together the product. Beside it in lib/, installed by this file too
as a package of its own, lib/moodlake_dev holds what is built around the product (benchmarks, the
real-data experiment runner, test doubles, the local Spark cluster of the cluster suite, the demo);
``moodlake`` never imports it at import time (tests/test_layout.py). An editable install maps each
top-level package to its folder when it is made: re-run ``make setup`` (or ``pip install -e .``)
after a package is added. Pinned third-party versions live in requirements.txt (installed
by ``make setup``); install_requires names only what the package imports, unpinned, so that an
installation into an existing Spark environment does not fight its pins.
"""
from setuptools import setup, find_packages

lib_packages = find_packages("lib")  # moodlake (the product) and moodlake_dev (beside it)
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
        "flickrapi", "requests", "torch", "torchvision", "petastorm", "tokenizers",
        "pyhive", "thrift", "thrift-sasl", "pure-sasl", "nbclient", "nbformat", "nbconvert", "ipykernel",
        "mlflow-skinny",
    ],
    entry_points={"console_scripts": ["moodlake = moodlake.cli:main"]},
)
