"""The engine table of each ready-made recipe's checkpoint, measured by exporting it, kept in `recipes/engines.json`.

The API shows which engines will serve a job's checkpoint before the job runs (GET
/v1/recipes, GET /v1/models/{name}), without torch and without a second copy of the rules:
the table is what `engines.engine_support` says of the manifest a real export writes. This
module makes that export for each ready-made recipe on a small random-weight Llama (training
stages cut to one step: the checkpoint's format does not depend on how long it trained) and
writes the file; `tests/compressor/export/test_recipe_engines.py` fails when a recipe, the
export or the rules change and the file was not regenerated:

    python -m compressor.export.recipe_engines      # rewrites compressor/recipes/engines.json
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from compressor.export.engines import RECIPE_ENGINES_FILE

# a stage's length fields -> what one short pass uses (the format it exports is the same)
_SHORT = {"steps": 1, "epochs": 2, "qsur_samples": 0}  # AffineQuant's gradual mask needs 2 epochs


def shortened(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recipe's stages with training cut to a step and optional metrics off."""
    out = []
    for stage in stages:
        (name, cfg), = stage.items()
        cfg = dict(cfg or {})
        for key, value in _SHORT.items():
            if key in cfg:
                cfg[key] = value
        if "stage_steps" in cfg:
            cfg["stage_steps"] = [1] * len(cfg["stage_steps"])
        cfg.pop("ppl_p", None)
        out.append({name: cfg})
    return out


class _ByteTokenizer:
    """Bytes as token ids (the small model's vocabulary is 256): what a stage that reads text needs here."""

    def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": list(text.encode())}

    def save_pretrained(self, _folder: Path) -> None:
        pass


def exported_manifest(recipe_name: str, folder: Path) -> dict[str, Any]:
    """Export the ready-made recipe `recipe_name` (shortened) from a small random Llama into `folder`; its manifest."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from compressor.context import CompressionContext
    from compressor.eval.resources import CostMeter
    from compressor.export.compressed_tensors_format import export_compressed_tensors
    from compressor.models.adapter import adapter_for
    from compressor.pipeline import run_stages
    from compressor.progress import Progress
    from compressor.spec import Recipe, load_recipe

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                         num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                                         max_position_embeddings=256, tie_word_embeddings=False)).eval()
    stages = shortened(load_recipe(recipe_name).model_dump(mode="json", exclude_none=True)["stages"])
    recipe = Recipe.model_validate({"stages": stages})
    ctx = CompressionContext(model, _ByteTokenizer(), adapter_for(model), recipe, Progress(), data_dir=folder)
    ctx._calibration = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    run_stages(ctx, CostMeter())
    export_compressed_tensors(model, _ByteTokenizer(), folder, {"model": "tiny"})
    return json.loads((folder / "manifest.json").read_text())


def main() -> None:
    from compressor.spec.files import ready_made_recipes

    tables = {}
    for name in ready_made_recipes():
        with tempfile.TemporaryDirectory() as tmp:
            tables[name] = exported_manifest(name, Path(tmp))["engine_support"]
        print(name, {e: row["serves"] for e, row in tables[name].items()}, flush=True)
    RECIPE_ENGINES_FILE.write_text(json.dumps(tables, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECIPE_ENGINES_FILE}")


if __name__ == "__main__":
    main()
