"""A real-music development corpus: Debian's `ufoai-music` (orchestral game soundtrack, Ogg Vorbis, ~4 h).

The embedded corpus is synthetic, so every figure kvae publishes about sound is also measured on
real music. This script builds that corpus; it is never run by CI and its output is never committed.

    python benchmarks/real_music.py --out ~/kvae-real             # apt-get download + dpkg -x, split, decode
    python benchmarks/real_music.py --deb ufoai-music_2.5-2_all.deb --out ~/kvae-real --train 5 --test 1
    kvae fit --config fc --data ~/kvae-real                        # train/ and test/ are the two splits

Steps: fetch the package with `apt-get download ufoai-music` (or take `--deb`), unpack it with
`dpkg -x`, take the Ogg Vorbis tracks out of the game's `0music.pk3` (a zip), pick tracks in a
seeded order (`--train` and `--test` of them, default all: every 8th to test), copy them into
`OUT/train/` and `OUT/test/`, then decode every copied track through kvae's reader
(tensorflow-io for Ogg) and resample it into kvae's cache at `--rate` Hz, so a later `kvae fit`
starts at once. A track that does not decode is skipped and reported. Existing files in OUT are
kept (a rerun only fills in what is missing); OUT must not be inside the unpacked package.
"""

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kvae  # noqa: E402

kvae.configure()

PACKAGE = "ufoai-music"
PK3 = "usr/share/games/ufoai/base/0music.pk3"


def fetch_deb(folder):
    """`apt-get download ufoai-music` into `folder`; return the .deb's path."""
    try:
        subprocess.run(["apt-get", "download", PACKAGE], cwd=folder, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit("real_music: apt-get not found; download the package elsewhere and pass --deb")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"real_music: apt-get download {PACKAGE} failed: {exc.stderr.strip().splitlines()[-1:]}")
    debs = sorted(Path(folder).glob(f"{PACKAGE}_*.deb"))
    if not debs:
        sys.exit(f"real_music: apt-get download left no {PACKAGE}_*.deb in {folder}")
    return debs[-1]


def tracks_in(deb, folder):
    """Unpack `deb` with dpkg -x into `folder`; return the open pk3 zip and its .ogg member names."""
    try:
        subprocess.run(["dpkg", "-x", str(deb), str(folder)], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit("real_music: dpkg not found (Debian or Ubuntu needed to unpack the package)")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"real_music: dpkg -x {deb} failed: {exc.stderr.strip()[-300:]}")
    pk3 = Path(folder) / PK3
    if not pk3.is_file():
        sys.exit(f"real_music: {deb} has no {PK3}; is it the {PACKAGE} package?")
    archive = zipfile.ZipFile(pk3)
    names = sorted(n for n in archive.namelist() if n.lower().endswith(".ogg"))
    return archive, names


def split(names, n_train, n_test, seed):
    """Seeded choice of (train, test) track names; with no counts, all tracks and every 8th to test."""
    order = list(names)
    random.Random(seed).shuffle(order)
    if n_train is None and n_test is None:
        return [n for i, n in enumerate(order) if i % 8], order[::8]
    n_test = 1 if n_test is None else n_test
    n_train = len(order) - n_test if n_train is None else n_train
    if n_train < 1 or n_test < 1 or n_train + n_test > len(order):
        sys.exit(f"real_music: --train {n_train} --test {n_test} does not fit {len(order)} tracks")
    return order[n_test:n_test + n_train], order[:n_test]


def copy_tracks(archive, names, dest):
    """Copy the members `names` of `archive` into `dest` (atomically; existing files are kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = dest / Path(name).name
        if target.exists():
            continue
        partial = target.with_name(target.name + ".partial")
        with archive.open(name) as src, open(partial, "wb") as out:
            shutil.copyfileobj(src, out)
        partial.replace(target)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="corpus folder to create (train/ and test/ inside)")
    parser.add_argument("--deb", help=f"an already downloaded {PACKAGE}_*.deb (default: apt-get download)")
    parser.add_argument("--train", type=int, help="tracks for training (default: all but the test ones)")
    parser.add_argument("--test", type=int, help="held-out tracks (default: every 8th, or 1 with --train)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the track order")
    parser.add_argument("--rate", type=int, default=3000, help="cache the decoded tracks at this rate (0: don't)")
    args = parser.parse_args(argv)

    from kvae.data import prepare

    out = Path(args.out).expanduser().resolve()
    with tempfile.TemporaryDirectory(prefix="kvae-ufoai-") as work:
        deb = Path(args.deb).expanduser() if args.deb else fetch_deb(work)
        if not deb.is_file():
            sys.exit(f"real_music: --deb {deb}: no such file")
        archive, names = tracks_in(deb, Path(work) / "pkg")
        train, test = split(names, args.train, args.test, args.seed)
        copy_tracks(archive, train, out / "train")
        copy_tracks(archive, test, out / "test")
    print(f"{len(train)} training and {len(test)} held-out tracks in {out}")
    print("held out: " + ", ".join(Path(n).stem for n in test))
    if args.rate:
        corpus = prepare(out, sample_rate=args.rate)
        print(corpus.report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
