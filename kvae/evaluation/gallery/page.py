"""The gallery's page: one self-contained HTML string (inline CSS, a self-test script that runs only at #selftest).

Every text is escaped with `html.escape`; every clip is a lazily loaded PNG
above a native `<audio controls>` player, so playback needs no JavaScript.
"""

import html
import json
import math
import time


def _e(text):
    return html.escape(str(text), quote=True)


def _number(value, fmt="{:.4g}"):
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


CSS = """
:root { color-scheme: light; --muted: #4a4a4a; --line: #d0d0d0; --ref: #f3f3f3; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1rem 1.25rem; color: #111;
  background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 0; overflow-wrap: anywhere; }
h3 { font-size: 1rem; margin: .9rem 0 .35rem; border-bottom: 1px solid var(--line); }
.lead, .note, .path { color: var(--muted); }
.note { font-size: .9rem; }
nav ul { display: flex; flex-wrap: wrap; gap: .2rem 1.5rem; padding: 0; margin: .5rem 0 1rem; list-style: none; }
.path { font-size: .85rem; overflow-wrap: anywhere; margin: 0; }
.runs { display: grid; grid-auto-flow: column; grid-auto-columns: minmax(25rem, 1fr);
  grid-template-rows: repeat(7, auto); column-gap: 1.5rem; }
.run { grid-row: span 7; display: grid; grid-template-rows: subgrid; border-top: 3px solid #333;
  padding-top: .5rem; min-width: 0; }
.run > * { min-width: 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .75rem; margin: 0; font-size: .9rem; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
details { font-size: .85rem; margin-top: .35rem; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: .8rem; margin: .25rem 0 .5rem; }
caption { text-align: left; font-size: .85rem; color: var(--muted); padding-bottom: .2rem; }
th, td { padding: .15rem .4rem; border-bottom: 1px solid var(--line); vertical-align: top; }
td { text-align: right; white-space: nowrap; }
.verdicts { font-size: .85rem; padding-left: 1.1rem; margin: .25rem 0; }
.verdicts li.ref { font-style: italic; }
th[scope=row] { text-align: left; font-weight: 600; white-space: nowrap; }
tr.ref { background: var(--ref); }
tr.ref th { font-weight: normal; font-style: italic; }
.pairs, .pair, .clips { display: grid; gap: .6rem; margin-bottom: .5rem; }
.pairs { grid-template-columns: repeat(auto-fill, minmax(min(100%, 34rem), 1fr)); column-gap: 1.5rem; }
.pair { grid-template-columns: 1fr 1fr; margin: 0; }
.clips { grid-template-columns: repeat(auto-fill, minmax(min(100%, 14rem), 1fr)); }
figure { margin: 0; }
figcaption { font-size: .85rem; margin-bottom: .15rem; }
img { display: block; width: 100%; max-width: 384px; height: auto; background: #eee; }
img.wide { max-width: 100%; }
audio { display: block; width: 100%; max-width: 384px; height: 2.2rem; }
a:focus-visible, audio:focus-visible, summary:focus-visible, .table-wrap:focus-visible {
  outline: 3px solid #1a5fb4; outline-offset: 2px; }
#selftest-result:empty { display: none; }
"""

SELFTEST = r"""
(function () {
  if (location.hash !== '#selftest') return;
  var out = document.getElementById('selftest-result');
  var errors = [];
  window.addEventListener('error', function (e) {
    errors.push(e.message || ('failed to load ' + ((e.target && (e.target.currentSrc || e.target.src)) || '?')));
  }, true);
  function settle(el, check, events) {
    return new Promise(function (resolve) {
      var finished = false;
      function done(timeout) {
        if (finished) return;
        finished = true;
        var r = check(el);
        if (timeout) r.timeout = true;
        resolve(r);
      }
      events.forEach(function (name) { el.addEventListener(name, function () { done(false); }); });
      setTimeout(function () { done(true); }, 8000);
    });
  }
  var audios = Array.prototype.map.call(document.querySelectorAll('audio'), function (a) {
    var p = settle(a, function (el) {
      return {src: el.currentSrc || el.src, readyState: el.readyState, duration: el.duration,
              error: el.error ? el.error.code : null,
              ok: el.readyState >= 1 && el.duration > 0 && !el.error};
    }, ['loadedmetadata', 'error']);
    a.preload = 'metadata';
    a.load();
    return p;
  });
  var images = Array.prototype.map.call(document.querySelectorAll('img'), function (img) {
    var check = function (el) {
      return {src: el.currentSrc || el.src, width: el.naturalWidth, alt: el.alt,
              ok: el.complete && el.naturalWidth > 0};
    };
    img.loading = 'eager';
    if (img.complete && img.naturalWidth > 0) return Promise.resolve(check(img));
    return settle(img, check, ['load', 'error']);
  });
  Promise.all([Promise.all(audios), Promise.all(images)]).then(function (r) {
    var ok = r[0].every(function (x) { return x.ok; }) && r[1].every(function (x) { return x.ok; });
    out.textContent = JSON.stringify({done: true, ok: ok && errors.length === 0, audio: r[0], images: r[1],
                                      errors: errors});
  });
})();
"""


def _figure_html(fig, run):
    """A clip: caption, then its waveform-and-spectrogram image, then the browser's own player."""
    w, h = fig["size"]
    png, wav, caption = _e(fig["png"]), _e(fig["wav"]), _e(fig["caption"])
    return (f'<figure><figcaption>{caption} ({fig["seconds"]:.2f} s)</figcaption>'
            f'<img src="{png}" width="{w}" height="{h}" loading="lazy" alt="{_e(fig["alt"])}">'
            f'<audio controls preload="metadata" src="{wav}" aria-label="Play {caption}, {_e(run)}">'
            f'<a href="{wav}">{caption} (WAV)</a></audio></figure>')


def _config_html(info, shown):
    config, history = info["config"] or {}, info["history"]
    items = []
    model_cfg = config.get("model", {})
    if model_cfg:
        args = ", ".join(f"{k}={v}" for k, v in model_cfg.items() if k != "type")
        items.append(("model", f"{model_cfg.get('type', '?')}" + (f" ({args})" if args else "")))
    if shown["model"]:
        m = shown["model"]
        items.append(("network", f"{m['class']}, {m['parameters']:,} parameters, {m['window']} samples at "
                                 f"{m['sample_rate']} Hz"))
    data = config.get("data", {})
    if data:
        rate = data.get("sample_rate", data.get("rate"))  # a run of kvae 0.1 saved its config with data.rate
        items.append(("data", f"{data.get('path') or 'embedded corpus'} at {rate} Hz, "
                              f"{data.get('window_seconds')} s windows, batch {data.get('batch_size')}"))
    train = config.get("train", {})
    if train:
        items.append(("training", f"epochs {train.get('epochs')}, learning rate {train.get('learning_rate')}, "
                                  f"KL {train.get('kl_schedule')}, seed {train.get('seed')}"))
    if history:
        epochs = len(next(iter(history.values())))
        last = ", ".join(f"{k} {_number(history[k][-1])}" for k in ("loss", "val_loss", "kl", "val_kl")
                         if k in history)
        items.append(("trained", f"{epochs} epoch{'s' if epochs != 1 else ''}; last: {last}"))
    if not config:
        items.append(("config", "no config.json in the run folder"))
    out = ["<dl>"] + [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items] + ["</dl>"]
    if config:
        out.append(f"<details><summary>config.json</summary><pre>{_e(json.dumps(config, indent=2))}</pre></details>")
    return "".join(out)


def _eval_html(info, shown):
    from kvae.evaluation.report import REALISM_KEYS, RECONSTRUCTION_KEYS

    result = shown["eval"]
    run = info["path"]
    if result is None:
        note = shown["eval_note"] or (f"no evaluation yet: run kvae evaluate {run} --out {run / 'eval.json'} "
                                      "(or kvae gallery --evaluate)")
        return f'<p class="note">{_e(note)}</p>'
    name = info["name"]
    s, d = result.get("settings", {}), result.get("data", {})
    out = [f'<p class="note">{_e(shown.get("eval_source", ""))}: every set of {_e(s.get("n_clips", "?"))} clips '
           f'against {_e(d.get("reference_windows", "?"))} random training windows (seed {_e(s.get("seed", "?"))}). '
           "Realism: C2ST 0.5 = indistinguishable from the training data, 1.0 = always told apart; lower is "
           "better for every column but temporal std, where real music is the target. Reference rows (ref:, in "
           "italics) show what real music and failures score.</p>"]

    def table(rows, keys, caption):
        head = "".join(f'<th scope="col">{_e(title)}</th>' for _, title, _ in keys)
        body = []
        for row_name, row in rows.items():
            if not isinstance(row, dict):
                continue
            cells = []
            for key, _, fmt in keys:
                if key.endswith("c2st"):
                    cells.append(f"{_number(row.get(key), '{:.3f}')} [{_number(row.get(key + '_low'), '{:.2f}')}-"
                                 f"{_number(row.get(key + '_high'), '{:.2f}')}]" if row.get(key) is not None
                                 else _number(None, "{}"))
                elif fmt == "kbit":
                    cells.append(_number(None if row.get(key) is None else row[key] / 1000.0, "{:.3g}"))
                else:
                    cells.append(_number(row.get(key), fmt))
            tds = "".join(f"<td>{_e(c)}</td>" for c in cells)
            cls = ' class="ref"' if str(row_name).startswith(("ref: ", "ladder: ")) else ""
            body.append(f'<tr{cls}><th scope="row">{_e(row_name)}</th>{tds}</tr>')
        return (f'<div class="table-wrap" role="region" tabindex="0" aria-label="{_e(caption)}"><table>'
                f'<caption>{_e(caption)}</caption><thead><tr><th scope="col">set</th>{head}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody></table></div>')

    realism = result.get("realism", {})
    verdicts = [(k, row["verdict"]) for k, row in realism.items() if isinstance(row, dict) and row.get("verdict")]
    if verdicts:
        ref = ' class="ref"'
        out.append(f'<ul class="verdicts" aria-label="Verdicts of {_e(name)}">'
                   + "".join(f'<li{ref if k.startswith("ref: ") else ""}><strong>{_e(k)}</strong>: {_e(v)}</li>'
                             for k, v in verdicts) + "</ul>")
    out.append(table(realism, REALISM_KEYS, f"Realism of {name}"))
    if result.get("reconstruction"):
        out.append(table(result["reconstruction"], RECONSTRUCTION_KEYS, f"Reconstruction by {name}"))
        out.append('<p class="note">Reconstruction: held-out windows against their own inputs (paired C2ST: 0.5 = '
                   'indistinguishable), beside the codec ladder (ladder:, in italics: the same windows through '
                   'known codecs); lower is better but for SI-SDR.</p>')
        verdict = result["reconstruction"].get("reconstructions", {}).get("verdict")
        if verdict:
            out.append(f'<p><strong>reconstructions</strong>: {_e(verdict)}</p>')
    return "".join(out)


def _run_html(info, shown, number):
    name, slug = info["name"], info["slug"]
    hid = f"run-{number}"
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in info["notes"])
    parts = [f'<header><h2 id="{hid}">{_e(name)}</h2><p class="path">{_e(info["path"])}</p>{notes}</header>']
    parts.append(f'<section aria-labelledby="{hid}-config"><h3 id="{hid}-config">Config</h3>'
                 f'{_config_html(info, shown)}</section>')
    if shown["loss"]:
        src, size = shown["loss"]
        src = _e(src)
        wh = f' width="{size[0]}" height="{size[1]}"' if size else ""
        body = (f'<a href="{src}"><img class="wide" src="{src}"{wh} loading="lazy" alt="Loss curves of {_e(name)}: '
                f'total, reconstruction and KL against epoch, training and validation (opens the full-size '
                f'image)"></a>')
    else:
        body = '<p class="note">no loss curves (no loss_curves.png or history.csv)</p>'
    parts.append(f'<section aria-labelledby="{hid}-loss"><h3 id="{hid}-loss">Loss curves</h3>{body}</section>')
    parts.append(f'<section aria-labelledby="{hid}-eval"><h3 id="{hid}-eval">Evaluation</h3>'
                 f'{_eval_html(info, shown)}</section>')
    if shown["recon"]:
        where = shown.get("recon_split", "test")
        body = (f'<p class="note">evenly spaced windows of the {_e(where)} split, each beside its reconstruction</p>'
                '<div class="pairs">'
                + "".join(f'<div class="pair">{_figure_html(a, name)}{_figure_html(b, name)}</div>'
                          for a, b in shown["recon"])
                + "</div>")
    else:
        body = f'<p class="note">{_e(shown["recon_note"])}</p>'
    parts.append(f'<section aria-labelledby="{hid}-recon"><h3 id="{hid}-recon">Real windows and reconstructions'
                 f'</h3>{body}</section>')
    body = (f'<p class="note">{_e(shown["samples_note"])}</p>' if shown["samples_note"] else "")
    if shown["samples"]:
        body += '<div class="clips">' + "".join(_figure_html(f, name) for f in shown["samples"]) + "</div>"
    parts.append(f'<section aria-labelledby="{hid}-samples"><h3 id="{hid}-samples">Prior samples</h3>{body}</section>')
    if shown["pieces"]:
        body = '<div class="clips">' + "".join(_figure_html(f, name) for f in shown["pieces"]) + "</div>"
    else:
        body = f'<p class="note">{_e(shown["pieces_note"])}</p>'
    parts.append(f'<section aria-labelledby="{hid}-pieces"><h3 id="{hid}-pieces">Generated pieces</h3>{body}</section>')
    return f'<article class="run" aria-labelledby="{hid}" data-folder="{_e(slug)}">{"".join(parts)}</article>'


def _rate_plot_html(rate_plot):
    if not rate_plot:
        return ""
    src, size = rate_plot
    wh = f' width="{size[0]}" height="{size[1]}"' if size else ""
    return (f'<section aria-label="Rate and realism"><a href="{_e(src)}"><img class="wide" src="{_e(src)}"{wh} '
            'loading="lazy" alt="Paired C2ST of each run\'s reconstructions against its bitrate (KL per second), '
            'beside Opus and the other codec-ladder rows on the same held-out windows (opens the full-size '
            'image)"></a><p class="note">How detectable each run\'s reconstructions are (paired C2ST: 0.5 = '
            'not at all, 1.0 = always) at the rate it spends, beside classical codecs on the same windows.</p>'
            '</section>')


def render_page(infos, shown, title="kvae listening gallery", rate_plot=None):
    """The whole page as a string: one column per run (and the rate-realism figure, `(src, size)`, when given)."""
    count = len(infos)
    nav = "".join(f'<li><a href="#run-{i + 1}">{_e(info["name"])}</a> <span class="path">{_e(info["path"])}</span></li>'
                  for i, info in enumerate(infos))
    columns = "".join(_run_html(info, s, i + 1) for i, (info, s) in enumerate(zip(infos, shown)))
    made = time.strftime("%Y-%m-%d %H:%M")
    lead = "One run" if count == 1 else f"{count} runs side by side"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{_e(title)}</h1><p class="lead">'
        f"{lead}, made {_e(made)}. Every player is the browser's own (no script needed); each image is the "
        "clip's waveform above its spectrogram.</p>"
        f'<nav aria-label="Runs"><ul>{nav}</ul></nav></header>'
        f"{_rate_plot_html(rate_plot)}"
        f'<main class="runs">{columns}</main>'
        '<pre id="selftest-result" aria-live="polite"></pre>'
        f"<script>{SELFTEST}</script></body></html>\n"
    )
