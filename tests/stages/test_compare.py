"""stages/compare.py: what eval winrate and the training watch share."""

from __future__ import annotations

from rlaif.rundir.store import Store
from rlaif.spec.config import ModelConfig
from rlaif.spec.constitution import load_constitution
from rlaif.stages import compare

from tests.conftest import ROOT


def test_a_scripted_side_gets_its_format_without_preparing_a_model(tmp_path, monkeypatch):
    """`auto` on a scripted model asks the scripted engine, never resolve_model (which would prepare the embedded model)."""
    def no_model(name):
        raise AssertionError(f"resolve_model({name!r}) called for a scripted model")

    monkeypatch.setattr(compare, "resolve_model", no_model)
    session = compare.Session(load_constitution(ROOT / "constitutions" / "harmless.yaml"), Store(tmp_path / "r.sqlite"))
    try:
        assert compare.resolve_format(session, ModelConfig(backend="scripted")) == "completion"
        assert compare.resolve_format(session, ModelConfig(backend="scripted", prompt_format="chat")) == "chat"
    finally:
        session.close()
