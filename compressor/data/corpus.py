"""The bundled English text: a Wikipedia excerpt and the Lee news corpus from the gensim wheel.

Wikipedia: articles of the dump excerpt, cleaned of wiki markup, longer than 2,000
characters, in dump order. The last 10% (rounded up) are the test split, the rest the
calibration split, so calibration never sees evaluation text. News: `lee_background.cor`,
used only for evaluation (text the calibration did not come from).
"""

from __future__ import annotations

import bz2
import importlib.util
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from compressor.data.textfiles import read_text_file

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_FILE = "lee_background.cor"
MIN_ARTICLE_CHARS = 2000


def _gensim_test_data() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the bundled corpus needs gensim==4.4.0 (pip install gensim==4.4.0)")
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"


@lru_cache(maxsize=1)
def wiki_articles() -> tuple[str, ...]:
    """Cleaned articles of more than 2,000 characters, in dump order."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    articles = []
    with bz2.open(_gensim_test_data() / WIKI_FILE) as f:
        for _title, text, _pageid in extract_pages(f):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            clean = filter_wiki(text).replace("'''", "").replace("''", "")
            clean = re.sub(r"\n{3,}", "\n\n", clean).strip()
            if len(clean) > MIN_ARTICLE_CHARS:
                articles.append(clean)
    return tuple(articles)


def wiki_split(split: Literal["calibration", "test"]) -> str:
    articles = wiki_articles()
    n_test = math.ceil(len(articles) * 0.1)
    chosen = articles[-n_test:] if split == "test" else articles[:-n_test]
    return "\n\n".join(chosen)


@lru_cache(maxsize=1)
def news_text() -> str:
    return (_gensim_test_data() / NEWS_FILE).read_text(encoding="utf-8")


def load_text(name: str, purpose: Literal["calibration", "eval"], data_dir: Path | None = None) -> str:
    """Text by dataset name: 'wiki' (split by purpose), 'news', or a user file in `data_dir`."""
    if name == "wiki":
        return wiki_split("calibration" if purpose == "calibration" else "test")
    if name == "news":
        return news_text()
    if data_dir is None:
        raise ValueError(f"dataset {name!r}: user text files need the store's data folder")
    path = (data_dir / name).resolve()
    if path.parent != data_dir.resolve():
        raise ValueError(f"dataset {name!r} must be a file name inside the data folder, not a path")
    if not path.is_file():
        known = sorted(p.name for p in data_dir.glob("*") if p.suffix in (".txt", ".jsonl")) if data_dir.is_dir() else []
        raise ValueError(f"dataset {name!r} not found in {data_dir}; available: wiki, news{', ' if known else ''}{', '.join(known)}")
    return read_text_file(path)
