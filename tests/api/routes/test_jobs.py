"""/v1/jobs as a pipeline uses it: ready-made recipes by name and with overrides, summaries in the
list, the report on its own, and ETag / If-None-Match on job reads."""

from __future__ import annotations

import pytest

from service.db import jobs as jobs_db
from service.records import JobStatus
from tests.api.conftest import Api

MODEL = "smollm2-135m"


def _ready_made(api: Api) -> dict[str, dict]:
    return {r["name"]: r["recipe"] for r in api.client.get("/v1/recipes", headers=api.alice).json()["data"]}


def _errors(response) -> list[dict]:  # noqa: ANN001
    return response.json()["detail"]


def test_a_ready_made_recipe_by_name(api: Api) -> None:
    r = api.submit({"model": MODEL, "recipe": "w4a16-gptq"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["recipe_name"] == "w4a16-gptq"
    assert job["spec"]["recipe"] == _ready_made(api)["w4a16-gptq"]  # stored and run in full
    assert job["spec"]["recipe"]["stages"][0]["quantize"]["weights"]["method"] == "gptq"


def test_a_ready_made_recipe_with_overrides(api: Api) -> None:
    body = {"model": MODEL, "recipe": {"base": "w4a16-gptq",
                                       "set": {"eval.max_tokens": 2048, "stages.0.quantize.weights.group_size": 128}}}
    r = api.submit(body)
    assert r.status_code == 202, r.text
    recipe = r.json()["spec"]["recipe"]
    base = _ready_made(api)["w4a16-gptq"]
    assert recipe["eval"]["max_tokens"] == 2048 and base["eval"]["max_tokens"] != 2048
    assert recipe["stages"][0]["quantize"]["weights"]["group_size"] == 128
    recipe["eval"]["max_tokens"] = base["eval"]["max_tokens"]
    recipe["stages"][0]["quantize"]["weights"]["group_size"] = 64
    assert recipe == base  # nothing else changed
    # the same job posted in full is the same request (one idempotency hash)
    first = api.submit(body, headers={"Idempotency-Key": "k1"})
    full = api.submit({"model": MODEL, "recipe": first.json()["spec"]["recipe"]}, headers={"Idempotency-Key": "k1"})
    assert full.status_code == 200 and full.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(("recipe", "loc", "needle"), [
    ("w4a16-nope", ["body", "recipe"], "no ready-made recipe 'w4a16-nope'; ready-made: "),
    ({"base": "w4a16-nope"}, ["body", "recipe", "base"], "no ready-made recipe 'w4a16-nope'"),
    ({"base": "w4a16-gptq", "set": {"eval.max_tokenz": 1}}, ["body", "recipe", "set", "eval.max_tokenz"],
     "eval has no field 'max_tokenz'; its fields: "),
    ({"base": "w4a16-gptq", "set": {"stages.3.quantize": {}}}, ["body", "recipe", "set", "stages.3.quantize"],
     "stages has 1 entries"),
    ({"base": "w4a16-gptq", "set": {"eval.max_tokens": -5}}, ["body", "recipe", "set", "eval.max_tokens"],
     "greater than or equal to"),
    ({"base": "w4a16-gptq", "set": {"eval.max_tokens": "lots"}}, ["body", "recipe", "set", "eval.max_tokens"],
     "valid integer"),
    ({"base": "w4a16-gptq", "set": {"stages.0.quantize.weights": {"bits": 9}}},
     ["body", "recipe", "set", "stages.0.quantize.weights", "bits"], "less than or equal to 8"),
    ({"base": "w4a16-gptq", "sett": {}}, ["body", "recipe", "sett"], "Extra inputs are not permitted"),
])
def test_a_bad_name_path_or_value_is_422_naming_it(api: Api, recipe: object, loc: list, needle: str) -> None:
    r = api.submit({"model": MODEL, "recipe": recipe})
    assert r.status_code == 422, r.text
    assert [e for e in _errors(r) if e["loc"] == loc and needle in e["msg"]], _errors(r)


def test_the_openapi_schema_documents_the_three_recipe_forms(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    ref = doc["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"model": MODEL, "recipe": "w4a16-gptq"} in body["examples"]
    forms = body["properties"]["recipe"]["anyOf"]
    names = next(f for f in forms if f.get("type") == "string")
    assert {"w4a16-gptq", "w4a16-rtn"} <= set(names["enum"])
    overrides = doc["components"]["schemas"]["RecipeOverrides"]
    assert {"base", "set"} <= set(overrides["properties"]) and "dotted paths" in overrides["properties"]["set"]["description"]
    assert {"$ref": "#/components/schemas/Recipe"} in forms


def test_recipes_list_with_their_schema(api: Api) -> None:
    body = api.client.get("/v1/recipes", headers=api.alice).json()
    gptq = next(r for r in body["data"] if r["name"] == "w4a16-gptq")
    assert gptq["stages"] == ["quantize"] and gptq["recipe"]["calibration"]["samples"] == 128
    assert {"stages", "calibration", "eval", "export"} <= set(body["recipe_schema"]["properties"])
    # who serves each recipe's checkpoint, before a job runs (the export's rule table, compressor/recipes/engines.json)
    w4a8 = next(r for r in body["data"] if r["name"] == "w4a8-fp8-gptq")["engines"]
    assert w4a8["vllm-hopper"]["serves"] and not w4a8["vllm-ampere"]["serves"] and w4a8["vllm-ampere"]["reason"]
    assert all(set(r["engines"]) == {"transformers", "vllm-ampere", "vllm-hopper", "vllm-blackwell"} for r in body["data"])


def _finish_with_report(api: Api, job_id: str, report: dict) -> None:
    with api.db.transaction() as s:
        lease = jobs_db.claim(s, job_id, "test", 30)
        assert jobs_db.finish(s, lease, JobStatus.succeeded, message="ok", report=report, artifacts=[])


def test_list_has_summaries_and_the_report_is_on_the_job(api: Api) -> None:
    done, queued = api.submit().json()["id"], api.submit().json()["id"]
    report = {"perplexity": {"compressed": {"wiki": 21.0}}, "layers": [{"layer": i, "rel_error": 0.1} for i in range(500)]}
    _finish_with_report(api, done, report)
    page = api.client.get("/v1/jobs", headers=api.alice).json()
    assert [j["id"] for j in page["data"]] == [queued, done]
    for summary in page["data"]:
        assert not {"report", "spec", "artifacts"} & set(summary)
    assert page["data"][1]["status"] == "succeeded" and page["data"][1]["progress"] is None
    assert api.client.get(f"/v1/jobs/{done}", headers=api.alice).json()["report"] == report
    assert api.client.get(f"/v1/jobs/{done}/report", headers=api.alice).json() == report
    missing = api.client.get(f"/v1/jobs/{queued}/report", headers=api.alice)
    assert missing.status_code == 409 and "it is queued" in missing.json()["detail"]
    assert api.client.get(f"/v1/jobs/{done}/report", headers=api.bob).status_code == 404


def test_etag_and_if_none_match_on_job_reads(api: Api) -> None:
    job_id = api.submit().json()["id"]
    first = api.client.get(f"/v1/jobs/{job_id}", headers=api.alice)
    etag = first.headers["ETag"]
    again = api.client.get(f"/v1/jobs/{job_id}", headers={**api.alice, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    listed = api.client.get(f"/v1/jobs/{job_id}", headers={**api.alice, "If-None-Match": f'"other", W/{etag}'})
    assert listed.status_code == 304
    assert api.client.get(f"/v1/jobs/{job_id}", headers={**api.bob, "If-None-Match": etag}).status_code == 404
    api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.alice)
    changed = api.client.get(f"/v1/jobs/{job_id}", headers={**api.alice, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["status"] == "cancelled" and changed.headers["ETag"] != etag

    done = api.submit().json()["id"]
    _finish_with_report(api, done, {"kl": {"wiki": 0.1}})
    report = api.client.get(f"/v1/jobs/{done}/report", headers=api.alice)
    cached = api.client.get(f"/v1/jobs/{done}/report", headers={**api.alice, "If-None-Match": report.headers["ETag"]})
    assert cached.status_code == 304


def test_a_recipe_the_models_family_cannot_run_is_422_at_submit(api: Api) -> None:
    """Gemma 2's norms after each block make R1 unfusable: refused when submitted, with the field, before any worker runs."""
    import json

    from tests.service_setup import fake_store_entry

    fake_store_entry(api.settings.home, "gemma-2-like")
    config = {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216,
              "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
              "hidden_activation": "gelu_pytorch_tanh", "vocab_size": 256000, "attn_logit_softcapping": 50.0}
    (api.settings.home / "models" / "gemma-2-like" / "config.json").write_text(json.dumps(config))
    response = api.submit({"model": "gemma-2-like", "recipe": "w4a4kv4-hadamard-gptq"})
    assert response.status_code == 422
    messages = [e["msg"] for e in _errors(response)]
    assert any(m.startswith("gemma-2-like: recipe.stages[0].hadamard.r1: gemma2:") for m in messages), messages
    assert all(e["loc"] == ["body", "recipe"] for e in _errors(response))
    from sqlalchemy import func, select

    from service.db.models import Job

    with api.db.transaction() as s:
        assert s.execute(select(func.count()).select_from(Job)).scalar_one() == 0  # nothing stored
