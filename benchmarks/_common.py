"""Helpers shared by the benchmark scripts in this folder (not a benchmark itself).

The scripts import it as `_common` (their own folder is put on `sys.path`):
the report (printed and kept for `--out`), plain-text tables and number
formatting, the machine/versions header and load average, /proc/self/status
readings, and running a script's own child processes that hand back one
`RESULT {json}` line.
"""

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1e6


# --------------------------------------------------------------------------- report and tables

class Report:
    """Prints lines as they come and keeps them for saving."""

    def __init__(self):
        self.lines = []
        self.started = time.perf_counter()

    def __call__(self, *lines):
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)

    def section(self, title):
        self("", title, "=" * len(title))

    def finish(self, out, filename, last=()):
        """Print the total time, the load average and the `last` lines; with `out`, save the report as `filename`."""
        self("", f"total benchmark time: {time.perf_counter() - self.started:.0f} s; " + load_line(), *last)
        if out:
            (out / filename).write_text("\n".join(self.lines) + "\n")


def command_line(script):
    """The report's 'command:' line for `benchmarks/<script>` run with this process's arguments."""
    return "command: " + " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])


def make_work_dir(out, prefix):
    """A fresh temporary folder (under `out` if given, which is created)."""
    if out:
        out.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=out))


def table(headers, rows, align=None):
    """Format rows as aligned plain-text columns; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if align is None:
        align = ["l"] + ["r"] * (len(headers) - 1)
    lines = []
    for n, r in enumerate(cells):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def fmt(x, digits=1):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def comma_list(parser, text, choices, option, noun):
    """Split an option's comma list; a parser error names the first item not in `choices`."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if item not in choices:
            parser.error(f"{option}: unknown {noun} {item} (choose from {', '.join(choices)})")
    return items


# --------------------------------------------------------------------------- machine

def load_line():
    try:
        return "load average (1/5/15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average: n/a"


def machine_lines(modules=("keras", "torch"), extra_versions=(), note=""):
    """Header lines: platform, CPUs and RAM, versions, Keras backend and load average.

    Args:
        modules: modules whose `__version__` is listed (or why they do not import).
        extra_versions: more "name version" strings, listed after numpy's.
        note: text put between the KERAS_BACKEND and the load average.
    """
    import numpy as np

    lines = [f"machine: {platform.platform()}"]
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cpus
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 1024 ** 2:.1f} GiB RAM"
                break
    except OSError:
        pass
    lines.append(f"cpu:     {cpus} logical CPUs ({usable} usable){', ' + model if model else ''}{mem}")
    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}", *extra_versions]
    for mod in modules:
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except Exception as exc:
            versions.append(f"{mod} unavailable ({type(exc).__name__})")
    lines.append("versions: " + ", ".join(versions))
    lines.append(f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND')}; {note}" + load_line())
    return lines


def read_proc_status(keys, unit=MB):
    """The fields `keys` (kB values, e.g. VmRSS, VmHWM) of /proc/self/status in bytes / `unit`.

    With `unit=None` the values are whole bytes (ints). Fields that are not
    there (or no /proc at all) are left out.
    """
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in keys:
                    value = int(rest.split()[0]) * 1024
                    out[key] = value if unit is None else value / unit
    except OSError:
        pass
    return out


# --------------------------------------------------------------------------- child processes

def run_script(script, args, **kwargs):
    """Run `script` in a fresh interpreter with command-line `args`; return the CompletedProcess (output captured)."""
    cmd = [sys.executable, str(Path(script).resolve()), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def print_result(result):
    """Child side: hand `result` (JSON-able) back to the parent."""
    print("RESULT " + json.dumps(result), flush=True)


def parse_result(stdout):
    """Parent side: the child's result from its last 'RESULT ' line, or None."""
    for line in stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None


def child_result(proc):
    """The child's result, or {"error": exit status and its last three lines of output}."""
    res = parse_result(proc.stdout)
    if res is not None:
        return res
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
