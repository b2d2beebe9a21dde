"""The package as users get it: a normal wheel that runs every CLI command from any folder, presets
shipped inside it and equal to the repository's readable copies, light imports, files of a readable size."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from kvae.presets import REPO_COPIES, presets_dir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kvae"


@pytest.mark.parametrize("kind", sorted(REPO_COPIES))
def test_repository_copies_equal_the_shipped_presets(kind):
    shipped = {p.name: p.read_text(encoding="utf-8") for p in presets_dir(kind).glob("*.toml")}
    copies = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / REPO_COPIES[kind]).glob("*.toml")}
    assert shipped, f"no {kind} presets shipped"
    assert copies == shipped, f"{REPO_COPIES[kind]}/ differs from kvae/presets: run python -m kvae.presets --sync"


def _imported(statement):
    code = f"{statement}; import sys; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "\
           "('tensorflow', 'keras', 'kvae'))))"
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return set(out.stdout.split())


def test_imports_stay_light_and_layered():
    assert _imported("import kvae") == {"kvae"}
    models = _imported("import kvae.models, kvae.losses")
    assert not {m for m in models if m.startswith("tensorflow")}, "kvae.models imports TensorFlow"
    assert not {m for m in models if m.startswith(("kvae.evaluation", "kvae.training", "kvae.tuning"))}
    data = _imported("import kvae.data")
    assert not {m for m in data if m.startswith(("tensorflow", "keras"))}, "kvae.data imports Keras/TensorFlow"


def test_no_module_is_long_without_a_stated_reason():
    long = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
            if len(p.read_text(encoding="utf-8").splitlines()) > 400
            and "longer than 400 lines because" not in p.read_text(encoding="utf-8")[:2000].lower()]
    assert long == []


def _copy_sources(dest):
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True)
    files = tracked.stdout.split("\n") if tracked.returncode == 0 else []
    if not files:  # not a git checkout: copy what a build needs
        files = [str(p.relative_to(ROOT)) for p in [*PACKAGE.rglob("*"), ROOT / "setup.cfg",
                                                   ROOT / "pyproject.toml", ROOT / "README.md"]]
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file() and "__pycache__" not in source.parts:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def test_wheel_install_runs_every_command_from_any_folder(tmp_path, embedded, kvae_home):
    """`pip install .` (not -e): presets are found, the CLI works from an unrelated folder."""
    src, wheels, venv, work = (tmp_path / d for d in ("src", "wheels", "venv", "work"))
    for d in (src, work):
        d.mkdir()
    _copy_sources(src)
    run = dict(capture_output=True, text=True, timeout=300)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(wheels), str(src)], **run)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("kvae-*.whl"))
    # A fresh venv that reuses this environment's installed dependencies (a .pth line), but not its
    # editable kvae (a .pth inside a .pth-added folder is not executed), so kvae comes from the wheel.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, **run)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, **run).stdout.strip()
    Path(purelib, "_test_env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "-q", str(wheel)], **run)
    assert install.returncode == 0, install.stderr[-3000:]

    env = dict(os.environ, KVAE_HOME=str(kvae_home), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)
    env.pop("KERAS_BACKEND", None)
    fit = subprocess.run([str(venv / "bin" / "kvae"), "fit", "--epochs", "1", "--steps-per-epoch", "1",
                          "--run", "runs/quick"], cwd=work, env=env, **run)
    assert fit.returncode == 0, fit.stdout[-2000:] + fit.stderr[-3000:]
    assert (work / "runs" / "quick" / "model.keras").is_file()

    script = """
import sys, kvae
from kvae.cli import main
assert "site-packages" in kvae.__file__, kvae.__file__
steps = ["--epochs", "1", "--steps-per-epoch", "1"]
for argv in (["fit", "--config", "conv1d", "--run", "runs/conv1d", *steps],
             ["sample", "runs/quick", "-n", "1", "--out", "samples", "--no-plots"],
             ["reconstruct", "runs/quick", "samples/sample_0.wav", "rec.wav"],
             ["evaluate", "runs/quick", "--n-clips", "10", "--out", "eval.json"],
             ["gallery", "runs/quick", "runs/conv1d", "-n", "1", "--out", "gallery"],
             ["tune", "--config", "tiny", "--dir", "search", "--max-trials", "1"],
             ["prior", "fit", "runs/conv1d", "--config", "chunk", "--set", "train.max_minutes=0",
              "--set", "train.epochs=1", "--set", "train.steps_per_epoch=1", "--set", "prior.width=8"],
             ["prepare", "--rate", "2000"]):
    code = main(argv)
    print("COMMAND", argv[0], code, flush=True)
    assert code == 0, argv
"""
    rest = subprocess.run([str(python), "-c", script], cwd=work, env=env, **run)
    assert rest.returncode == 0, rest.stdout[-3000:] + rest.stderr[-3000:]
    assert [line.split()[1] for line in rest.stdout.splitlines() if line.startswith("COMMAND")] == [
        "fit", "sample", "reconstruct", "evaluate", "gallery", "tune", "prior", "prepare"]
    assert (work / "rec.wav").is_file() and (work / "eval.json").is_file() and (work / "search").is_dir()
    prior = json.loads((work / "runs" / "conv1d" / "prior" / "config.json").read_text())
    assert (prior["prior"]["kind"], prior["prior"]["patch_frames"], prior["train"]["trim_silence_db"]) == (
        "chunk", 4, -50.0)  # the shipped recipe, found by name from an unrelated folder
    assert (work / "runs" / "quick" / "gallery" / "index.html").is_file()  # kvae fit wrote one
    assert (work / "gallery" / "index.html").is_file() and (work / "gallery" / "conv1d" / "recon_0.wav").is_file()
