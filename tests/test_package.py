"""The installed package: `pip wheel .` holds conf/ and the `segkit` command, and a wheel installed (not editable)
into a fresh virtual environment trains from any folder."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


def clean_environment() -> dict[str, str]:
    """This process's environment without what points Python at the checkout (the tests run with PYTHONPATH)."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}


def run_installed(venv: Path, *command: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = clean_environment()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the working tree, built from a copy of it (the build leaves build/ and egg-info behind)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("segkit", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path_factory.mktemp("wheels")
    # No build isolation: the build uses this environment's setuptools, so nothing is downloaded.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    (built,) = wheels.glob("segkit-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed and this environment's packages visible through a
    .pth file (torch is not installed again). The .pth files of those packages are not run, so this
    environment's editable segkit is not what `import segkit` finds."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True, capture_output=True, timeout=300, env=clean_environment())
    site_packages = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip()
    (Path(site_packages) / "segkit_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_the_wheel_holds_every_config_and_the_segkit_command(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(next(name for name in names if name.endswith(".dist-info/entry_points.txt")))
    configs = {f"segkit/conf/{path.relative_to(REPO / 'conf').as_posix()}" for path in (REPO / "conf").rglob("*.yaml")}
    assert len(configs) > 40 and configs <= names
    assert "segkit/conf/hydra/launcher/slurm.yaml" in names  # three folders deep
    assert {"segkit/cli.py", "segkit/bench/__main__.py", "segkit/models/encoders/registry.py"} <= names
    assert b"segkit = segkit.cli:main" in entry_points


def test_the_installed_command_lists_every_subcommand(venv, tmp_path):
    where = run_installed(venv, "python", "-c", "import segkit.config as c; print(c.__file__); print(c.CONFIG_DIR)",
                          cwd=tmp_path)
    module_file, config_dir = where.stdout.split()
    assert module_file.startswith(str(venv)) and config_dir.startswith(str(venv)), where.stderr  # not the checkout
    result = run_installed(venv, "segkit", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("train", "eval", "predict", "export", "summary", "lr_find", "bench", "data_check"):
        assert f"\n  {command} " in result.stdout
    unknown = run_installed(venv, "segkit", "fit", cwd=tmp_path)
    assert unknown.returncode == 1 and "segkit: unknown command 'fit'; commands: train, eval," in unknown.stderr


@pytest.mark.slow
def test_the_installed_package_trains_a_batch_from_any_folder(venv, tmp_path):
    for command in (["segkit", "train"], ["python", "-m", "segkit.train"]):
        folder = tmp_path / command[-1]
        folder.mkdir()
        result = run_installed(venv, *command, "trainer.fast_dev_run=true", "data.image_size=[32,32]",
                               "data.batch_size=2", "model.encoder.width=0.25", "trainer.accelerator=cpu",
                               cwd=folder, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        (metrics,) = folder.glob("outputs/train/runs/*/metrics.json")
        assert "val/miou" in metrics.read_text()
