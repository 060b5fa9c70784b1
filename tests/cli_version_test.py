"""Tests for `electra-jax --version`."""

import subprocess
import sys
from importlib import metadata

import pytest

import electra_jax
from electra_jax import cli


def test_version_flag_prints_the_installed_version(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["--version"])
  assert exit_info.value.code == 0
  assert capsys.readouterr().out == f"electra-jax {metadata.version('electra-jax')}\n"


def test_version_falls_back_to_the_package_version(monkeypatch):
  def not_installed(name):
    raise metadata.PackageNotFoundError(name)

  monkeypatch.setattr(metadata, "version", not_installed)
  assert cli.version() == electra_jax.__version__


def test_version_flag_from_the_command_line():
  out = subprocess.run(
    [sys.executable, "-m", "electra_jax.cli", "--version"],
    capture_output=True,
    text=True,
    check=True,
  )
  assert out.stdout == f"electra-jax {metadata.version('electra-jax')}\n"
