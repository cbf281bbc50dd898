"""The bundled corpus splits and user text files: deterministic and disjoint."""

import json

import pytest

from compressor.data.corpus import load_text, wiki_articles, wiki_split
from compressor.data.textfiles import read_text_file
from compressor.data.tokens import calibration_chunks, eval_windows


def test_wiki_split_is_the_last_tenth_and_disjoint():
    articles = wiki_articles()
    assert len(articles) == 100 and all(len(a) > 2000 for a in articles)
    test, cal = wiki_split("test"), wiki_split("calibration")
    assert test.startswith(articles[90][:200]) and cal.endswith(articles[89][-200:])
    assert articles[90] not in cal
    assert "[[" not in test and "'''" not in test  # wiki markup removed


def test_news_is_the_lee_corpus():
    assert load_text("news", "eval").startswith("Hundreds of people")


def test_user_files(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    assert read_text_file(tmp_path / "a.jsonl") == "one\n\ntwo"
    (tmp_path / "b.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="line 1.*'text'"):
        read_text_file(tmp_path / "b.jsonl")
    (tmp_path / "c.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1: not valid JSON"):
        read_text_file(tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match="must be a file name inside the data folder"):
        load_text("../a.jsonl", "calibration", tmp_path / "sub")
    with pytest.raises(ValueError, match="available: wiki, news, a.jsonl"):
        load_text("zzz.txt", "calibration", tmp_path)


class CharTokenizer:
    def __call__(self, text, **_):
        return {"input_ids": [ord(c) % 256 for c in text]}


def test_windows_and_chunks_are_deterministic_and_sized():
    text = "abcdefghij" * 100
    w = eval_windows(CharTokenizer(), text, max_tokens=250, window=100)
    assert w.shape == (2, 100)
    c = calibration_chunks(CharTokenizer(), text, samples=3, seqlen=50)
    assert c.shape == (3, 50) and c[1, 0].item() == ord("a")
    with pytest.raises(ValueError, match="needs 2000"):
        calibration_chunks(CharTokenizer(), text, samples=20, seqlen=100)
