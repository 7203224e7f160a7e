"""An installed rlaif works on its own: built as a wheel, installed outside the checkout, run from elsewhere.

The wheel is built from a copy of what it is made of (pyproject.toml, README.md, rlaif/), with the venv's own
setuptools and no network, into a fresh virtual environment that sees the shared site-packages (torch,
transformers, ...) through a .pth line, so only rlaif itself comes from the wheel. Every command then runs with
the checkout off the path and the current directory elsewhere: the templates (prompts, the training chat
template, the dataset card, the report) must come from the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]  # a wheel build, a venv and four CLI processes: about a minute


def _run(args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # not the checkout
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the rlaif wheel installed and the shared site-packages on its path; its bin/."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "rlaif", src / "rlaif", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", base / "dist", src], cwd=base)
    (wheel,) = (base / "dist").glob("rlaif-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base).stdout.strip())
    # a plain path line: the shared packages are importable, but their .pth files (the editable rlaif) are not run
    (site / "shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=base)
    return venv / "bin"


def test_the_installed_copy_is_the_one_imported(installed, tmp_path):
    where = _run([installed / "python", "-c", "import rlaif.spec.templates as t; print(t.__file__); print(t.DEFAULT_DIR)"],
                 cwd=tmp_path).stdout.split()
    venv = installed.parent.resolve()
    assert Path(where[0]).resolve().is_relative_to(venv), where
    assert Path(where[1]).resolve().is_relative_to(venv) and (Path(where[1]) / "completion" / "respond.j2").is_file()


def test_constitution_show_from_the_wheel(installed, tmp_path):
    shutil.copy(ROOT / "constitutions" / "harmless.yaml", tmp_path / "harmless.yaml")
    out = _run([installed / "rlaif", "constitution", "show", "harmless.yaml", "--prompt", "PROMPT-X"], cwd=tmp_path).stdout
    assert "PROMPT-X" in out and "Human:" in out  # the few-shot completion template, rendered


def test_hf_run_from_the_wheel(installed, tmp_path, tiny_base_model):
    """respond, critique, judge and a one-step DPO (the tokenizer has no chat template: rlaif's training template)
    on a tiny random model; then the dataset card of an export."""
    shutil.copy(ROOT / "constitutions" / "harmless.yaml", tmp_path / "harmless.yaml")
    shutil.copy(ROOT / "data" / "prompts.jsonl", tmp_path / "prompts.jsonl")
    (tmp_path / "p.yaml").write_text(
        "name: wheel\nconstitution: harmless.yaml\nprompts: prompts.jsonl\nlimit: 2\nbatch_size: 4\ndrop_degenerate: false\n"
        f"models:\n  policy: {{model: {tiny_base_model}, backend: hf, dtype: float32}}\n"
        "stages:\n  respond: {n: 2, max_tokens: 8}\n  critique: {rounds: 1, max_tokens: 8}\n"
        "  judge: {revisions: false, drop_ties: false, min_option_mass: 0}\n"
        "  dpo: {trl: {max_steps: 1, per_device_train_batch_size: 2, max_length: 64}}\n")
    proc = _run([installed / "rlaif", "run", "p.yaml"], cwd=tmp_path)
    run = tmp_path / "outputs" / "wheel"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["counts"]["responses"] == 4, proc.stdout
    assert info["counts"]["train"]["dpo"]["steps"] == 1
    saved = run / "dpo"
    template = ((saved / "chat_template.jinja").read_text() if (saved / "chat_template.jinja").is_file()
                else json.loads((saved / "tokenizer_config.json").read_text()).get("chat_template", ""))
    assert "Human:" in template  # rlaif/prompts/training/chat_template.jinja, from the installed package
    _run([installed / "rlaif", "export", run, "--format", "jsonl", "--out", tmp_path / "export"], cwd=tmp_path)
    assert "rlaif" in (tmp_path / "export" / "README.md").read_text()  # prompts/cards/dataset.md.j2
