"""User calibration text: plain `.txt`, or `.jsonl` with one `{"text": ...}` object per line."""

from __future__ import annotations

import json
from pathlib import Path


def read_text_file(path: Path) -> str:
    if path.suffix == ".txt":
        return path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        texts = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path.name} line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path.name} line {lineno}: each line must be an object with a string field 'text'")
            texts.append(record["text"])
        if not texts:
            raise ValueError(f"{path.name}: no records with a 'text' field")
        return "\n\n".join(texts)
    raise ValueError(f"{path.name}: calibration files must be .txt or .jsonl")
