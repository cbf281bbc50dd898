"""The HTML report: renders every section it has data for, escapes, and needs no network."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from compressor.eval.report import EngineRow, JobInfo, LayerError, QSURRow, Report, ResumeSection, SizeInfo, SparsitySection, StageReport
from compressor.machine import MachineInfo
from compressor.eval.report_html import write_report_html

KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def full_report() -> Report:
    """A report with every section, built from the typed model so it has the pipeline's keys."""
    return Report(
        job=JobInfo(
            model="smollm2-135m",
            recipe={"name": "w4 <script>alert(1)</script>", "seed": 3, "stages": [{"quantize": {"bits": 4}}]},
            recipe_sha256="ab" * 32,
            seed=3,
        ),
        versions={"torch": "2.13.0", "transformers": "4.56.0"},
        seconds=123.4,
        peak_rss_mb=2048.0,
        perplexity={
            "original": {"wiki": 17.3125, "news": 21.75},
            "compressed": {"wiki": 18.9375, "news": 24.0625},
        },
        kl={"wiki": 0.0731, "news": 0.0913},
        eval_tokens={"wiki": 16384, "news": 16384},
        size=SizeInfo(bits_per_weight=4.25, checkpoint_bytes=90_000_000, original_bytes=270_000_000),
        stages=[
            StageReport(name="0:hadamard", seconds=1.5, peak_rss_mb=900.0, details={"seed": 0}),
            StageReport(name="1:quantize", seconds=42.0, peak_rss_mb=1500.0, details={"method": "gptq"}),
            StageReport(name="2:flatquant", seconds=80.0, peak_rss_mb=1600.0, details={"layers": [
                {"layer": i, "epoch_loss": [0.5 + i, 0.25 + i], "condition": {"attn_in": 3.0 + i, "down_in": 9.0 + i}} for i in range(3)]}),
        ],
        layers=[
            LayerError(name=f"model.layers.{i}.mlp.{k}", layer=i, kind=k, rel_error=0.01 * (1 + i) * (1 + j))
            for i in range(4)
            for j, k in enumerate(KINDS)
        ],
        qsur=[
            QSURRow(layer=i, name=f"model.layers.{i}.down_input", kind="down", values={"original": 0.2 + i, "rotation": 0.5 + i})
            for i in range(4)
        ],
        sparsity=SparsitySection(per_layer=[0.5, 0.49, 0.51, 0.5], mean=0.5025, fatrelu_threshold=0.01,
                                 eval_tokens=4096, finetune="full", steps=300),
        machine=MachineInfo(cpu_model="Test CPU 9000", isa_flags=["avx2", "fma"], aten_cpu_capability="AVX2", threads=2,
                            device="cpu"),
        resume=ResumeSection(attempt=2, resumed_from="stage 1/1 quantize at layer 17 of 30", units_reused=17,
                             seconds_saved=321.5, checkpoint_bytes_written=12345, checkpoint_peak_bytes=99999),
        engines={"transformers": EngineRow(serves=True, path="compressed-tensors decompress"),
                 "vllm-hopper": EngineRow(serves=False, reason="W4A8Fp8 needs group_size 128")},
    )


class _Collector(HTMLParser):
    """Tag names, image sources and text, to check the page parses and what it shows."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.srcs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.srcs += [v or "" for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _render(report: Report | dict, tmp_path: Path) -> tuple[str, _Collector]:
    path = tmp_path / "sub" / "report.html"
    write_report_html(report, path)
    page = path.read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(page)
    return page, parser


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, _Collector]:
    """The full report rendered once: each render draws six charts (~1 s on a small CPU)."""
    return _render(full_report(), tmp_path_factory.mktemp("full"))


def test_full_report_renders_every_section(rendered: tuple[str, _Collector]) -> None:
    page, parsed = rendered
    text = " ".join(parsed.text)
    for heading in ["Machine", "Checkpoints and resume", "Perplexity", "Size", "Serving engines", "Stages",
                    "Layer-wise training: 2:flatquant", "Per-layer relative error", "QSUR", "Sparsity", "Recipe"]:
        assert f"<h2>{heading}</h2>" in page
    for number in ["17.31", "18.94", "21.75", "24.06", "0.0731", "0.0913"]:
        assert number in text
    assert "+9.39%" in text  # wiki: 18.9375 / 17.3125 - 1
    assert "90.00" in text and "270.00" in text and "3.00×" in text
    assert "smollm2-135m" in text and "ab" * 32 in text and "2.13.0" in text
    assert "gptq" in text and "model.layers.3.mlp.down_proj" in text
    assert "123.4" in text and "2048" in text  # total seconds and peak RSS in the header
    assert "0.5025" in text and "4096" in text  # the sparsity section's mean and eval tokens
    assert "Test CPU 9000" in text and "avx2 fma" in text and "AVX2" in text
    assert "stage 1/1 quantize at layer 17 of 30" in text and "321.5" in text and "99999" in text
    assert "vllm-hopper" in text and "W4A8Fp8 needs group_size 128" in text


def test_sparsity_chart_is_about_activations(rendered: tuple[str, _Collector]) -> None:
    page, _ = rendered
    assert 'alt="fraction of zero activations per layer"' in page
    assert "zero weights" not in page


def test_report_and_its_json_render_the_same(tmp_path: Path) -> None:
    typed, _ = _render(full_report(), tmp_path / "typed")
    stored, _ = _render(full_report().model_dump(mode="json"), tmp_path / "json")
    assert typed == stored


def test_charts_are_embedded_pngs(rendered: tuple[str, _Collector]) -> None:
    _, parsed = rendered
    pngs = [s for s in parsed.srcs if s.startswith("data:image/png;base64,")]
    assert len(pngs) == 6  # perplexity, flatquant loss and condition numbers, per-layer error, QSUR, sparsity
    for src in pngs:
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")


def test_no_external_resources(rendered: tuple[str, _Collector]) -> None:
    page, parsed = rendered
    assert all(s.startswith("data:") for s in parsed.srcs)
    assert "link" not in parsed.tags
    assert not re.search(r"https?://", page)


def test_strings_are_escaped(rendered: tuple[str, _Collector]) -> None:
    page, parsed = rendered
    assert "<script>" not in page
    assert "script" not in parsed.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # The escaped name still reads correctly once parsed.
    assert any("w4 <script>alert(1)</script>" in t for t in parsed.text)


def test_minimal_report_renders(tmp_path: Path) -> None:
    """A stored report.json of a job that got no further than its start still renders."""
    page, parsed = _render({"job": {"model": "smollm2-135m"}}, tmp_path)
    assert "smollm2-135m" in " ".join(parsed.text)
    assert "<h2>" not in page  # no section without data, not even empty headings
    assert "img" not in parsed.tags


def test_partial_and_malformed_values_do_not_crash(tmp_path: Path) -> None:
    report = {
        "job": {"model": "m", "recipe": {"name": "r"}},
        "perplexity": {"compressed": {"wiki": float("nan")}},
        "kl": {"news": 0.5},
        "size": {"bits_per_weight": 4.0},
        "stages": [{"name": "quantize"}],
        "layers": [{"name": "x", "layer": 0, "kind": "q_proj", "rel_error": 0.0}],
        "sparsity": {"per_layer": []},
        "qsur": [],
    }
    page, parsed = _render(report, tmp_path)
    text = " ".join(parsed.text)
    assert "<h2>Perplexity</h2>" in page and "news" in text and "0.5" in text
    assert "<h2>Size</h2>" in page and "4.000" in text
    assert "<h2>Stages</h2>" in page
    assert "<h2>QSUR</h2>" not in page and "<h2>Sparsity</h2>" not in page
    # A zero error cannot go on a log axis: the section keeps its table but draws no chart.
    assert "<h2>Per-layer relative error</h2>" in page and "img" not in parsed.tags
