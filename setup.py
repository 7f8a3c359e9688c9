"""bert-beam: BERT embeddings for large text collections with Apache Beam."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements() -> dict[str, list[str]]:
    """Direct requirements from requirements.in, by section: runtime, then "# --- NAME" extras."""
    sections: dict[str, list[str]] = {"runtime": []}
    current = "runtime"
    for line in (HERE / "requirements.in").read_text().splitlines():
        if line.startswith("# --- "):
            current = line.removeprefix("# --- ").split(":")[0].strip()
            sections[current] = []
        elif line and not line.startswith("#"):
            sections[current].append(line)
    return sections


REQUIREMENTS = _requirements()

setup(
    name="bert-beam",
    version="0.1.0",
    description="Turn large text collections into BERT embeddings with Apache Beam.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*"]),
    install_requires=REQUIREMENTS.pop("runtime"),
    extras_require=REQUIREMENTS,
    entry_points={"console_scripts": ["bert-beam=pipeline.run:main"]},
)
