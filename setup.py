"""bert-beam: BERT embeddings for large text collections with Apache Beam."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements() -> list[str]:
    """Runtime requirements: the direct ones from requirements.in, before the test tools."""
    lines = (HERE / "requirements.in").read_text().splitlines()
    runtime = []
    for line in lines:
        if line.startswith("# test"):
            break
        if line and not line.startswith("#"):
            runtime.append(line)
    return runtime


setup(
    name="bert-beam",
    version="0.1.0",
    description="Turn large text collections into BERT embeddings with Apache Beam.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*"]),
    install_requires=_requirements(),
    entry_points={"console_scripts": ["bert-beam=pipeline.run:main"]},
)
