"""kvae gallery: one static HTML page per set of runs, its files, its errors, and the page in a real browser."""

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

import kvae
from kvae import cli
from kvae.data import write_wav
from kvae.errors import KvaeError
from kvae.evaluation.evaluate import REFERENCE_ROWS
from kvae.evaluation.gallery import fit_gallery, write_gallery
from kvae.evaluation.report import REALISM_KEYS, RECONSTRUCTION_KEYS, verdicts

TINY = {
    "name": "tiny",
    "data": {"sample_rate": 3000, "window_seconds": 0.25, "windows_per_recording": 2, "val_windows_per_recording": 1,
             "batch_size": 8},
    "model": {"type": "fc", "hidden_layers": 1, "hidden_units": 16, "latent_dim": 4},
    "train": {"epochs": 1, "steps_per_epoch": 1, "n_samples": 2, "verbose": 0},
}
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Every start tag with its attributes, the text, and a check that every element is closed in order."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.text, self.stack, self.problems = [], [], [], []
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed elements: {self.stack}"
        assert not self.problems, self.problems

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag):
        return [attrs for t, attrs in self.tags if t == tag]

    @property
    def words(self):
        return " ".join("".join(self.text).split())


def check_page(index):
    """The page parses, is self-contained, and every file it names exists beside it; return the parsed page."""
    text = index.read_text(encoding="utf-8")
    page = Page(text)
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "the page must not reach the network"
    assert not page.all("link") and all("src" not in a for a in page.all("script")), "no external resources"
    links = [a["src"] for a in page.all("img") + page.all("audio")] + [a["href"] for a in page.all("a")]
    for link in links:
        if link.startswith("#"):
            continue
        assert (index.parent / unquote(link)).is_file(), link
    assert len(page.all("h1")) == 1
    for img in page.all("img"):
        assert img.get("alt") and img.get("loading") == "lazy" and img.get("width") and img.get("height"), img
    for audio in page.all("audio"):
        assert "controls" in audio and audio.get("preload") in ("none", "metadata"), audio
        assert audio["src"].endswith(".wav")
    return page


def fake_evaluation(name="samples"):
    """An `evaluate` result with every row and key, as `kvae evaluate --out` writes it (no computing)."""
    rng = np.random.default_rng(0)
    realism = {}
    for row in ("samples", "reconstructions", *REFERENCE_ROWS):
        acc = 0.5 if row.startswith("ref: real") else float(rng.uniform(0.8, 1.0))
        realism[row] = {key: float(rng.uniform(0, 5)) for key, _, _ in REALISM_KEYS}
        realism[row].update(c2st=acc, c2st_low=acc - 0.1, c2st_high=min(acc + 0.05, 1.0), kid_low=0.0, kid_high=1.0)
    for row, text in verdicts(realism).items():
        realism[row]["verdict"] = text
    recon = {row: {key: 1.5 for key, _, _ in RECONSTRUCTION_KEYS} for row in ("reconstructions", "ref: silence")}
    recon["ref: silence"]["si_sdr_db"] = None  # -inf, as strict JSON stores it
    return {"model": {"class": "FCVAE", "sample_rate": 3000, "window": 750, "parameters": 1},
            "settings": {"n_clips": 12, "seed": 0}, "data": {"reference_windows": 12}, "realism": realism,
            "reconstruction": recon}


def files_of(folder):
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in Path(folder).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def run(embedded, tmp_path_factory):
    """A 1-step `kvae.fit` run folder (its gallery written by fit)."""
    folder = tmp_path_factory.mktemp("gallery") / "tiny-run"
    model, _ = kvae.fit(TINY, run=folder, verbose=False)
    return folder, model


@pytest.fixture(scope="module")
def two_runs(run, tmp_path_factory):
    """The run, and a copy with an eval.json, a long piece and a name that needs escaping."""
    folder, _ = run
    other = tmp_path_factory.mktemp("gallery-b") / "run b"
    shutil.copytree(folder, other, ignore=shutil.ignore_patterns("gallery"))
    config = json.loads((other / "config.json").read_text())
    config["name"] = 'b <script>alert("x")</script> & co'
    (other / "config.json").write_text(json.dumps(config))
    (other / "eval.json").write_text(json.dumps(fake_evaluation()))
    t = np.arange(2 * 3000) / 3000
    write_wav(other / "pieces" / "piece_0.wav", 0.3 * np.sin(2 * np.pi * 220 * t), 3000)
    return folder, other


def test_fit_writes_the_gallery(run):
    folder, model = run
    page = check_page(folder / "gallery" / "index.html")
    assert len(page.all("audio")) == 3 * 2 + 2  # 3 windows and their reconstructions, the run's 2 samples
    assert "no evaluation yet: run kvae evaluate" in page.words
    assert not list(folder.rglob(".*.tmp*")) and not list(folder.rglob(".*.png")), "temporary files left"
    assert fit_gallery(model, folder, {"train": {"gallery": False}}) is None  # train.gallery = false: nothing


def test_gallery_of_one_run(run, tmp_path):
    folder, _ = run
    before = files_of(folder)
    index = write_gallery([folder], out=tmp_path / "g", n=2)
    assert index == tmp_path / "g" / "index.html"
    assert files_of(folder) == before, "the run folder is only read"
    page = check_page(index)
    assert [a["src"].split("/")[-1] for a in page.all("audio")] == [
        "real_0.wav", "recon_0.wav", "real_1.wav", "recon_1.wav", "sample_0.wav", "sample_1.wav"]
    headings = [t for t, _ in page.tags if t in ("h2", "h3")]
    assert headings == ["h2", "h3", "h3", "h3", "h3", "h3", "h3"]
    words = page.words
    for title in ("Config", "Loss curves", "Evaluation", "Real windows and reconstructions", "Prior samples",
                  "Generated pieces"):
        assert title in words
    assert "FCVAE" in words and "embedded corpus at 3000 Hz" in words
    assert "none: a run with a prior over latents writes pieces/*.wav" in words
    from scipy.io import wavfile

    rate, pcm = wavfile.read(tmp_path / "g" / folder.name / "real_0.wav")
    assert rate == 3000 and pcm.dtype == np.int16 and pcm.shape == (750,)
    write_gallery([folder], out=tmp_path / "g", n=1)  # again, with fewer clips: the extra ones go
    assert sorted(p.name for p in (tmp_path / "g" / folder.name).glob("*.wav")) == [
        "real_0.wav", "recon_0.wav", "sample_0.wav"]
    check_page(index)


def test_gallery_of_two_runs_side_by_side(two_runs, tmp_path):
    index = write_gallery(list(two_runs), out=tmp_path / "both", n=1)
    text = index.read_text()
    page = check_page(index)
    assert len(page.all("article")) == 2 and len(page.all("h2")) == 2
    assert "<script>alert" not in text and "b &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in text
    assert {a["data-folder"] for a in page.all("article")} == {"tiny-run", "run-b"}
    # the second run's eval.json: realism and reconstruction tables with captions, verdicts, reference rows
    assert len(page.all("table")) == 2 and text.count("<caption>") == 2
    assert "Realism of b" in page.words and "samples: distinguishable from the training data" in page.words
    assert text.count('<tr class="ref">') == len(REFERENCE_ROWS) + 1
    assert "no evaluation yet: run kvae evaluate" in page.words  # the first run has none
    assert any(a["src"].endswith("run-b/piece_0.wav") for a in page.all("audio"))


def test_gallery_evaluate_option_runs_a_small_evaluation(run, tmp_path, monkeypatch):
    calls = []

    def evaluate(model, data=None, cache=None, n_clips=0, seed=0):
        calls.append(n_clips)
        return fake_evaluation()

    monkeypatch.setattr("kvae.evaluation.evaluate.evaluate", evaluate)
    folder, _ = run
    index = write_gallery([folder], out=tmp_path / "g", n=0, evaluate=True, n_clips=12)
    assert calls == [12]
    assert json.loads((tmp_path / "g" / folder.name / "eval.json").read_text())["settings"]["n_clips"] == 12
    page = check_page(index)
    assert len(page.all("table")) == 2 and not page.all("audio")
    assert "evaluated by this gallery (12 clips per set)" in page.words


def test_gallery_errors_are_one_line(run, tmp_path, capsys):
    folder, _ = run
    (tmp_path / "empty").mkdir()
    cases = [
        ([tmp_path / "missing"], None, "no such run folder"),
        ([folder / "config.json"], None, "not a folder"),
        ([tmp_path / "empty"], None, r"not a run folder \(no config.json or model.keras\)"),
        ([folder, folder], None, "--out: needed for several runs"),
        ([folder], folder, "is the run folder"),
        ([folder], folder.parent, "would write into the run folder"),
    ]
    for runs, out, message in cases:
        with pytest.raises(KvaeError, match=message):
            write_gallery(runs, out=out)
    with pytest.raises(KvaeError, match="-n: must be between"):
        write_gallery([folder], out=tmp_path / "g", n=-1)
    capsys.readouterr()
    assert cli.main(["gallery", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err == f"kvae: error: {tmp_path / 'missing'}: no such run folder\n"


def test_cli_gallery(run, tmp_path, capsys):
    folder, _ = run
    assert cli.main(["gallery", str(folder), "--out", str(tmp_path / "g"), "-n", "1"]) == 0
    assert f"wrote {tmp_path / 'g' / 'index.html'}" in capsys.readouterr().out
    check_page(tmp_path / "g" / "index.html")


def find_browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def test_gallery_in_a_real_browser(two_runs, tmp_path):
    """Headless Chromium loads the page: every <audio> has a duration, every image pixels, no console output."""
    browser = find_browser()
    if browser is None:
        pytest.skip(f"no browser found ({', '.join(BROWSERS)}): apt-get install chromium to run this test")
    index = write_gallery(list(two_runs), out=tmp_path / "both", n=2)
    page = check_page(index)
    common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000"]
    done = subprocess.run(common + ["--enable-logging=stderr", "--v=0", "--autoplay-policy=no-user-gesture-required",
                                    "--dump-dom", index.resolve().as_uri() + "#selftest"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="selftest-result"[^>]*>(.*?)</pre>', done.stdout, re.S)
    assert found and found.group(1).strip(), "the page's self-test did not finish:\n" + done.stdout[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    assert result["done"] and not result["errors"], result["errors"]
    assert len(result["audio"]) == len(page.all("audio")) == 2 * (2 * 2 + 2) + 1
    assert len(result["images"]) == len(page.all("img"))
    for audio in result["audio"]:
        assert audio["ok"] and audio["readyState"] >= 1 and audio["duration"] > 0, audio
    for image in result["images"]:
        assert image["ok"] and image["width"] > 0, image
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console  # the page logs nothing; any console line is an error or a warning
    shot = tmp_path / "gallery.png"
    done = subprocess.run(common + ["--window-size=1280,1600", f"--screenshot={shot}", index.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
