"""The pipeline's derived model settings: each role's model, named apart from the stage of the same role."""

from __future__ import annotations

from rlaif.spec.config import load_pipeline

from tests.conftest import write_pipeline


def test_judge_model_is_the_judges_model_not_the_judge_stage(workdir):
    path = write_pipeline(workdir / "p.yaml", "default", stages="stages:\n  respond: {n: 2}\n  judge: {}\n")
    p = load_pipeline(path)
    assert p.judge_model is p.models.policy  # no models.judge: the policy judges
    p = load_pipeline(path, ["models.judge.model=other"])
    assert p.judge_model is p.models.judge and p.judge_model.model == "other"
    assert p.stages.judge is not None and not hasattr(p, "judge")  # `judge` alone is only the stage (stages.judge)
