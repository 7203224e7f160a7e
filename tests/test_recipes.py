"""Every shipped pipeline and training recipe validates (nothing loads, no cluster needed), and the docs name them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlaif.spec.config import load_pipeline
from rlaif.pipeline import plan
from rlaif.spec.loader import load_yaml
from rlaif.train.config import train_config_from_data

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
TRAINING = sorted((ROOT / "configs" / "train").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_pipeline_recipe_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name constitutions/ and data/ from the repository root, as the docs run them
    p = plan(load_pipeline(path))
    assert p.prompts and p.pipeline.name == path.stem


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.name)
def test_training_recipe_validates(path):
    # check_dataset off: the run that makes its dataset does not exist here
    cfg = train_config_from_data(load_yaml(path, "training file"), str(path), None, check_dataset=False)
    assert cfg.method and cfg.trl


def test_scaling_doc_names_every_recipe():
    doc = (ROOT / "docs" / "scaling.md").read_text()
    scale = [p for p in PIPELINES if p.name.startswith("scale-")] + TRAINING
    assert len(scale) >= 3
    for path in scale:
        assert str(path.relative_to(ROOT)) in doc, path
    for command in ("ray start --head", "ray start --address", "accelerate launch --config_file configs/accelerate/zero3.yaml"):
        assert command in doc
