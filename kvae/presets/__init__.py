"""Built-in presets, shipped inside the package (keras-hub's presets idea).

`configs/` holds the experiment configs (`kvae fit --config NAME`), `search/`
the keras-tuner search configs (`kvae tune --config NAME`), `priors/` the
latent prior recipes (`kvae prior fit RUN --config NAME`). They are package
data, found through `importlib.resources`, so a normal (non-editable) install
finds them from any working folder.

These files are the one source of truth. The repository's top-level
`configs/`, `configs/priors/` and `tuning/*.toml` are copies for people to read and copy from;
`python -m kvae.presets --sync` rewrites them and a test keeps them equal.
(Mapping the top-level folders into the package with `package_dir` was the
other choice; it breaks in editable installs and plain checkouts, where the
package would then have no presets.)
"""

from importlib import resources
from pathlib import Path

KINDS = {"config": "configs", "search": "search", "prior": "priors"}
# Where the repository keeps its human-readable copy of each kind.
REPO_COPIES = {"config": "configs", "search": "tuning", "prior": "configs/priors"}
# The kinds a bare name may also name, after its own: a search may start from a model config; a
# prior recipe only from a recipe (a model config read as a prior recipe would fail on every key).
FALLBACK = {"config": (), "search": ("config",), "prior": ()}


def presets_dir(kind="config"):
    """The folder of one kind of preset ("config", "search" or "prior") inside the installed package."""
    if kind not in KINDS:
        raise ValueError(f"preset kind must be one of {', '.join(KINDS)}, got {kind!r}")
    # pip installs packages as plain folders, so this is a real path.
    return Path(str(resources.files(__name__).joinpath(KINDS[kind])))


def preset_names(kind="config"):
    """Sorted names (file stems) of the presets of a kind."""
    return sorted(p.stem for p in presets_dir(kind).glob("*.toml"))


def find_preset(name, kind="config", fallback=False):
    """The path of a preset given by name ("quickstart") or file name ("quickstart.toml"), or None.

    `fallback`: also look among the kinds `FALLBACK` lets `kind` borrow from, in order after its own.
    """
    name = str(name)
    if not name or "/" in name or "\\" in name:
        return None
    for k in (kind,) + (FALLBACK[kind] if fallback else ()):
        folder = presets_dir(k)
        for candidate in (folder / name, folder / f"{name}.toml"):
            if candidate.is_file():
                return candidate
    return None


def sync_copies(repo_root):
    """Write every preset into the repository's top-level copies; return the paths changed."""
    changed = []
    for kind, folder in REPO_COPIES.items():
        target = Path(repo_root) / folder
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(presets_dir(kind).glob("*.toml")):
            dest = target / source.name
            text = source.read_text(encoding="utf-8")
            if not dest.is_file() or dest.read_text(encoding="utf-8") != text:
                tmp = dest.with_name(f".{dest.name}.tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(dest)
                changed.append(dest)
    return changed
