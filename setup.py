"""The top-level prompts/ folder ships as the package ``graph_distill.prompts``; every other
package is found automatically (pyproject.toml)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["graph_distill*"]), "graph_distill.prompts"],
    package_dir={"graph_distill.prompts": "prompts"},
)
