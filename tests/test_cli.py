"""Every command has --help; the version is printed."""

import pytest
from click.testing import CliRunner

from rlaif.cli import main


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path", [()] + list(_commands(main)), ids=lambda p: " ".join(p) or "rlaif")
def test_help(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    assert len(result.output.splitlines()) > 3


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.output


@pytest.mark.subprocess
def test_python_m_rlaif_train_entry_point():
    """`accelerate launch -m rlaif.train ...` runs this module on every process."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "rlaif.train", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "{sft|reward|dpo|grpo|rloo|ppo}" in out.stdout


def test_accelerate_configs_load():
    from pathlib import Path

    from accelerate.commands.config.config_args import ClusterConfig

    files = sorted((Path(__file__).resolve().parent.parent / "configs" / "accelerate").glob("*.yaml"))
    assert len(files) == 3
    kinds = {ClusterConfig.from_yaml_file(f).distributed_type.value for f in files}
    assert kinds == {"MULTI_GPU", "DEEPSPEED", "FSDP"}


@pytest.mark.subprocess
def test_python_m_rlaif_cli_has_every_command():
    """`python -m rlaif.cli eval ...`: the `__main__` guard ran before the eval group was registered."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "rlaif.cli", "eval", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "winrate" in out.stdout, out.stderr


def test_run_help_names_every_stage():
    """`rlaif run --help` described three stages (respond, critique, revise); a pipeline has twelve."""
    import dataclasses
    import re

    from rlaif.spec.config import Stages

    text = CliRunner().invoke(main, ["run", "--help"]).output
    missing = [f.name for f in dataclasses.fields(Stages) if not re.search(rf"\b{f.name}\b", text)]
    assert not missing, f"rlaif run --help does not mention the stages {missing}"
