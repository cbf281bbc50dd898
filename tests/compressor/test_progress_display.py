"""What a person sees: a bar per stage on a terminal, readable lines with layer, rate and ETA elsewhere."""

import io

from rich.console import Console

from compressor.progress import ProgressEvent
from compressor.progress_display import ProgressDisplay, format_eta


def _events() -> list[ProgressEvent]:
    events = [ProgressEvent("stage_start", "stage 1/1: quantize", stage="quantize", time=0.0)]
    events += [ProgressEvent("layer", f"layer {i + 1}/10", stage="quantize", layer=i, num_layers=10,
                             fraction=(i + 1) / 10, time=2.0 * (i + 1)) for i in range(10)]
    events.append(ProgressEvent("stage_end", "quantize done in 20.0 s", stage="quantize", time=20.0))
    return events


def _show(terminal: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=120, color_system=None)
    with ProgressDisplay(console) as display:
        for event in _events()[:4]:
            display(event)
        if terminal:
            display._bars.refresh()
            mid = out.getvalue()
        for event in _events()[4:]:
            display(event)
    return mid if terminal else out.getvalue()


def test_plain_lines_name_stage_layer_rate_and_eta():
    text = _show(terminal=False)
    assert "quantize stage 1/1: quantize" in text
    assert "quantize layer 5/10  0.50 layer/s  ETA 0:00:10" in text
    assert "quantize layer 10/10  0.50 layer/s  ETA 0:00:00" in text
    assert "layer 4/10" not in text  # only every 5th layer and the last
    assert "quantize quantize done in 20.0 s" in text


def test_terminal_bar_shows_layer_rate_and_eta():
    text = _show(terminal=True)
    assert "layer 3/10" in text and "0.50 layer/s" in text and "ETA 0:00:14" in text


def test_format_eta():
    assert format_eta(None) == "-:--:--" and format_eta(3725.4) == "1:02:05"
