"""A self-contained HTML view of a job report, for people rather than programs.

The file must open anywhere (a browser on a laptop, a CI artifact viewer) with no network,
so CSS is inline and charts are PNGs rendered by matplotlib's Agg canvas and embedded as
base64 data URIs. It takes the typed `Report` (what the pipeline writes) or a report.json
mapping; sections read the JSON form, and every one is optional, so a stored report of a
failed or partial job still renders whatever it has.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from compressor.eval.report import Report

KIND_ORDER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto}img{max-width:100%}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, fmt: str = ".4g") -> str:
    """Format a number, or a dash for missing/non-numeric/non-finite values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—" if value is None else _esc(value)
    return format(value, fmt)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], numeric: Collection[int] = ()) -> str:
    """Cells must already be escaped; columns in `numeric` are right-aligned."""
    header = list(header)
    head = f"<tr>{''.join(f'<th>{_esc(h)}</th>' for h in header)}</tr>" if any(header) else ""
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{c}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table>{head}{body}</table>"


def _png(fig: Figure, alt: str) -> str:
    FigureCanvasAgg(fig)  # attach the Agg canvas: no pyplot, no global backend state
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _header(report: dict) -> str:
    job = report.get("job") or {}
    recipe = job.get("recipe") or {}
    seed = job.get("seed", recipe.get("seed") if isinstance(recipe, dict) else None)
    name = recipe.get("name") if isinstance(recipe, dict) else None
    rows = [
        ("model", _esc(job.get("model", "—"))),
        ("recipe", _esc(name if name is not None else "—")),
        ("recipe sha256", f"<code>{_esc(job.get('recipe_sha256', '—'))}</code>"),
        ("seed", _esc(seed if seed is not None else "—")),
        ("total seconds", _num(report.get("seconds"), ".1f")),
        ("peak RSS (MB)", _num(report.get("peak_rss_mb"), ".0f")),
    ]
    title = f"<h1>Compression report: {_esc(job.get('model', 'unknown model'))}</h1>"
    out = title + _table(["", ""], [(_esc(k), v) for k, v in rows])
    versions = report.get("versions") or {}
    if versions:
        out += "<h2>Library versions</h2>" + _table(
            ["library", "version"], [(_esc(k), _esc(v)) for k, v in sorted(versions.items())]
        )
    return out


def _machine_and_resume(report: dict) -> str:
    """Where the numbers came from (float kernels differ between CPUs) and what a resume reused."""
    out = ""
    machine = report.get("machine")
    if machine:
        rows = [("CPU", _esc(machine.get("cpu_model"))), ("ISA flags", _esc(" ".join(machine.get("isa_flags") or []))),
                ("ATen CPU capability", _esc(machine.get("aten_cpu_capability"))), ("threads", _esc(machine.get("threads"))),
                ("device", _esc(machine.get("device")))]
        if machine.get("gpu_name"):
            rows.append(("GPU", _esc(f"{machine['gpu_name']} (CUDA {machine.get('cuda_driver')})")))
        out += "<h2>Machine</h2>" + _table(["", ""], [(_esc(k), v) for k, v in rows])
    resume = report.get("resume")
    if resume:
        rows = [("attempt", _esc(resume["attempt"])), ("resumed at", _esc(resume.get("resumed_from") or "— (ran from the start)")),
                ("units reused", _esc(resume["units_reused"])), ("seconds saved", _num(resume["seconds_saved"], ".1f")),
                ("checkpoint bytes written", _esc(resume["checkpoint_bytes_written"])),
                ("checkpoint bytes at peak", _esc(resume["checkpoint_peak_bytes"]))]
        if resume.get("fresh_reason"):
            rows.append(("started fresh because", _esc(resume["fresh_reason"])))
        out += "<h2>Checkpoints and resume</h2>" + _table(["", ""], [(_esc(k), v) for k, v in rows])
    return out


def _engines(report: dict) -> str:
    """Which engines serve the checkpoint and why not: the export's one rule table."""
    engines = report.get("engines")
    if not engines:
        return ""
    rows = [(_esc(name), "yes" if e["serves"] else "no", _esc(e.get("path") or "—"), _esc(e.get("reason") or ""))
            for name, e in engines.items()]
    return "<h2>Serving engines</h2>" + _table(["engine", "serves", "path", "why not / note"], rows)


def _perplexity(report: dict) -> str:
    ppl = report.get("perplexity") or {}
    orig, comp = ppl.get("original") or {}, ppl.get("compressed") or {}
    kl = report.get("kl") or {}
    datasets = list(dict.fromkeys([*orig, *comp, *kl]))
    if not datasets:
        return ""
    rows = []
    for ds in datasets:
        o, c = orig.get(ds), comp.get(ds)
        delta = f"{100 * (c - o) / o:+.2f}%" if _finite(o) and _finite(c) and o else "—"
        rows.append((_esc(ds), _num(o), _num(c), delta, _num(kl.get(ds))))
    out = "<h2>Perplexity</h2>" + _table(
        ["dataset", "original", "compressed", "change", "KL (nats/token)"], rows, numeric={1, 2, 3, 4}
    )
    bars = [ds for ds in datasets if _finite(orig.get(ds)) or _finite(comp.get(ds))]
    if bars:
        fig = Figure(figsize=(max(4, 1.6 * len(bars)), 3.2))
        ax = fig.add_subplot()
        width = 0.38
        for shift, label, values in ((-width / 2, "original", orig), (width / 2, "compressed", comp)):
            ys = [values.get(ds) if _finite(values.get(ds)) else 0.0 for ds in bars]
            ax.bar([i + shift for i in range(len(bars))], ys, width, label=label)
        ax.set_xticks(range(len(bars)), bars)
        ax.set_ylabel("perplexity")
        ax.legend()
        out += _png(fig, "perplexity before and after compression")
    return out


def _size(report: dict) -> str:
    size = report.get("size") or {}
    if not size:
        return ""
    ckpt, orig = size.get("checkpoint_bytes"), size.get("original_bytes")
    mb = lambda b: _num(b / 1e6, ".2f") if _finite(b) else "—"  # noqa: E731
    ratio = f"{orig / ckpt:.2f}×" if _finite(ckpt) and _finite(orig) and ckpt else "—"
    rows = [
        ("bits per weight", _num(size.get("bits_per_weight"), ".3f")),
        ("checkpoint (MB)", mb(ckpt)),
        ("original (MB)", mb(orig)),
        ("compression ratio", ratio),
    ]
    return "<h2>Size</h2>" + _table(["", ""], [(_esc(k), v) for k, v in rows], numeric={1})


def _speed(report: dict) -> str:
    """Size, quality and speed side by side: the checkpoint as `compressor.load` runs it against the original."""
    speed = report.get("speed")
    if not speed:
        return ""
    where = f"{_esc(speed.get('device'))}, {_esc(speed.get('dtype'))}, {_esc(speed.get('threads'))} CPU threads"
    out = f'<h2 id="speed">Speed after reloading</h2><p>{where}</p>'
    if speed.get("skipped_reason"):
        return out + f"<p>Not measured: {_esc(speed['skipped_reason'])}</p>"
    size = report.get("size") or {}
    weights = speed.get("weight_bytes") or {}
    mb = lambda b: _num(b / 1e6, ".2f") if _finite(b) else "—"  # noqa: E731
    ratio = lambda a, b: f"{a / b:.2f}×" if _finite(a) and _finite(b) and b else "—"  # noqa: E731
    rows = [("checkpoint (MB)", mb(size.get("original_bytes")), mb(size.get("checkpoint_bytes")),
             ratio(size.get("checkpoint_bytes"), size.get("original_bytes"))),
            ("weights in memory (MB)", mb(weights.get("original")), mb(weights.get("compressed")),
             ratio(weights.get("compressed"), weights.get("original"))),
            ("bits per weight", "16", _num(size.get("bits_per_weight"), ".3f"), "")]
    out += "<h3>Size</h3>" + _table(["", "original", "compressed", "ratio"], rows, numeric={1, 2, 3})
    reload = speed.get("reload")
    if reload:
        verdict = "pass" if reload.get("passed") else "FAIL"
        rows = [(_esc(reload.get("dataset")), _esc(reload.get("windows")), _esc(reload.get("tokens")),
                 _num(reload.get("fake_quant_perplexity")), _num(reload.get("reloaded_perplexity")),
                 f"{100 * reload['relative_difference']:.3f}%" if _finite(reload.get("relative_difference")) else "—",
                 f"{100 * reload['tolerance']:.2f}%" if _finite(reload.get("tolerance")) else "—", verdict)]
        out += "<h3>Quality: fake-quant vs reloaded checkpoint</h3>" + _table(
            ["dataset", "windows", "tokens", "fake-quant ppl", "reloaded ppl", "difference", "tolerance", "check"],
            rows, numeric={1, 2, 3, 4, 5, 6})
    throughput = speed.get("throughput") or []
    if throughput:
        rows = [(_esc(t.get("phase")), _esc(t.get("batch")), _esc(t.get("tokens_per_sequence")),
                 _num(t.get("original_tokens_per_s"), ".1f"), _num(t.get("compressed_tokens_per_s"), ".1f"),
                 f"{t['speedup']:.2f}×" if _finite(t.get("speedup")) else "—") for t in throughput]
        out += (f"<h3>Tokens per second (median of {_esc(speed.get('rounds'))} after a warm-up)</h3>"
                + _table(["phase", "batch", "tokens / sequence", "original", "compressed", "speedup"], rows,
                         numeric={1, 2, 3, 4, 5}))
    backends = speed.get("backends") or []
    if backends:
        rows = [(_esc(b.get("kind")), _esc(b.get("backend")), _esc(b.get("kernel")), _esc(b.get("modules"))) for b in backends]
        out += "<h3>Kernels</h3>" + _table(["linear kind", "backend", "kernel", "modules"], rows, numeric={3})
    return out


def _stages(report: dict) -> str:
    stages = report.get("stages") or []
    if not stages:
        return ""
    rows = [
        (
            _esc(s.get("name", "?")),
            _num(s.get("seconds"), ".2f"),
            _num(s.get("peak_rss_mb"), ".0f"),
            _esc(json.dumps(s.get("details") or {}, sort_keys=True, default=str)),
        )
        for s in stages
    ]
    return "<h2>Stages</h2>" + _table(["stage", "seconds", "peak RSS (MB)", "details"], rows, numeric={1, 2})


def _layer_training(report: dict) -> str:
    """Block-wise stages (flatquant, affinequant): each layer's final loss and its transforms' condition numbers."""
    out = ""
    for s in report.get("stages") or []:
        layers = [r for r in (s.get("details") or {}).get("layers") or [] if isinstance(r, dict) and r.get("epoch_loss")]
        if not layers:
            continue
        name = str(s.get("name", "?"))
        loss = {"final block loss": [(r["layer"], r["epoch_loss"][-1]) for r in layers],
                "first epoch": [(r["layer"], r["epoch_loss"][0]) for r in layers]}
        condition: dict[str, list[tuple[float, float]]] = {}
        for r in layers:
            for key, value in (r.get("condition") or {}).items():
                condition.setdefault(str(key), []).append((r["layer"], value))
        out += (f"<h2>Layer-wise training: {_esc(name)}</h2>"
                + _line_plot(loss, "block loss", True, f"{name}: block loss per layer, first and last epoch")
                + (_line_plot(condition, "condition number", True, f"{name}: condition number of each transform per layer")
                   if condition else ""))
    return out


def _kind_key(kind: str) -> tuple[int, str]:
    return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), kind)


def _line_plot(series: dict[str, list[tuple[float, float]]], ylabel: str, log: bool, alt: str) -> str:
    keep = lambda p: _finite(p[1]) and (p[1] > 0 or not log)  # noqa: E731  (log axes drop <= 0)
    series = {label: sorted(filter(keep, pts)) for label, pts in series.items()}
    series = {label: pts for label, pts in series.items() if pts}
    if not series:
        return ""
    fig = Figure(figsize=(8, 3.8))
    ax = fig.add_subplot()
    for label, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    return _png(fig, alt)


def _layers(report: dict) -> str:
    layers = [r for r in report.get("layers") or [] if _finite(r.get("layer")) and _finite(r.get("rel_error"))]
    if not layers:
        return ""
    series: dict[str, list[tuple[float, float]]] = {}
    for r in sorted(layers, key=lambda r: _kind_key(str(r.get("kind")))):
        series.setdefault(str(r.get("kind", "?")), []).append((r["layer"], r["rel_error"]))
    worst = sorted(layers, key=lambda r: r["rel_error"], reverse=True)[:10]
    rows = [(_esc(r.get("name", "?")), _num(r["rel_error"])) for r in worst]
    return (
        "<h2>Per-layer relative error</h2>"
        + _line_plot(series, "relative output error", True, "relative error per layer")
        + "<p>Largest errors:</p>"
        + _table(["linear", "relative error"], rows, numeric={1})
    )


def _qsur(report: dict) -> str:
    entries = [e for e in report.get("qsur") or [] if _finite(e.get("layer"))]
    if not entries:
        return ""
    # Several tensors per layer (e.g. attention and MLP inputs) get one line per tensor and variant.
    suffix = lambda e: re.sub(r"^.*layers\.\d+\.?", "", str(e.get("name", "")))  # noqa: E731
    several = len({suffix(e) for e in entries}) > 1
    series: dict[str, list[tuple[float, float]]] = {}
    for e in entries:
        for variant, value in (e.get("values") or {}).items():
            label = f"{suffix(e)}: {variant}" if several else str(variant)
            series.setdefault(label, []).append((e["layer"], value))
    return "<h2>QSUR</h2>" + _line_plot(series, "QSUR", False, "QSUR per layer and variant")


def _sparsity(report: dict) -> str:
    sparsity = report.get("sparsity") or {}
    per_layer = [v if _finite(v) else 0.0 for v in sparsity.get("per_layer") or []]
    scalars = [(_esc(k), _num(v)) for k, v in sparsity.items() if k != "per_layer"]
    if not per_layer and not scalars:
        return ""
    out = "<h2>Sparsity</h2>" + (_table(["", ""], scalars, numeric={1}) if scalars else "")
    if per_layer:
        fig = Figure(figsize=(8, 3.2))
        ax = fig.add_subplot()
        ax.bar(range(len(per_layer)), per_layer)
        ax.set_xlabel("layer")
        ax.set_ylabel("fraction of zero activations")
        out += _png(fig, "fraction of zero activations per layer")
    return out


def _recipe(report: dict) -> str:
    recipe = (report.get("job") or {}).get("recipe")
    if recipe is None:
        return ""
    text = json.dumps(recipe, indent=2, sort_keys=False, default=str)
    return f"<h2>Recipe</h2><pre>{_esc(text)}</pre>"


SECTIONS = [_header, _machine_and_resume, _perplexity, _size, _speed, _engines, _stages, _layer_training, _layers, _qsur, _sparsity,
            _recipe]


def write_report_html(report: Report | dict[str, Any], path: Path) -> None:
    """Render `report` (the typed report, or report.json's contents) as one standalone HTML file."""
    if isinstance(report, Report):
        report = report.model_dump(mode="json")
    model = (report.get("job") or {}).get("model", "report")
    body = "\n".join(section(report) for section in SECTIONS)
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(model)}: compression report</title><style>{_CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
