"""``plait serve``: the real server in a subprocess on 127.0.0.1, real HTTP requests, the
API fuzzed from its OpenAPI description, and the page driven in headless Chromium.

One small bundle (a number, a category, a text, an image, a vector and a flag in; a
three-class label and a number out) is trained once, and one server with an API key and
small limits answers every test, so the JAX compilation and the server start are paid
once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from conftest import fit, png_bytes, serving, train_block
from plait.data import read_table
from plait.preprocess import encode_inputs

KEY = "test-key-7f3a"
AUTH = {"X-API-Key": KEY}
WORDS = ["good", "bad", "fine", "great", "awful", "ok", "soft", "warm"]
MAX_RECORDS, MAX_BODY = 40, 100_000

SPEC = {
    "inputs": [
        {"name": "age", "type": "number"},
        {"name": "color", "type": "category"},
        {"name": "review", "type": "text", "length": 6},
        {"name": "photo", "type": "image", "size": [8, 8],
         "encoder": {"filters": [4], "pooling": "average"}},
        {"name": "readings", "type": "vector", "size": 3},
        {"name": "member", "type": "binary", "missing": "skip"},
    ],
    "head": {"layers": [8]},
    "outputs": [{"name": "label", "type": "category"}, {"name": "score", "type": "number"}],
    "train": train_block(epochs=3),
}


def table(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, rows).round(1)
    color = rng.choice(["red", "green", "blue"], rows)
    brightness = rng.integers(0, 255, rows)
    label = np.where(age > 45, "old", np.where(color == "red", "red", "other"))
    return pd.DataFrame({
        "age": age,
        "color": color,
        "review": [" ".join(rng.choice(WORDS, 3)) for _ in range(rows)],
        "photo": [png_bytes(np.full((8, 8, 3), b)) for b in brightness],
        "readings": [list(v) for v in rng.normal(0, 1, (rows, 3)).round(3)],
        "member": rng.choice(["no", "yes"], rows),
        "label": label,
        "score": age * 2 + brightness / 10,
    })


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as a client sends them: images as base64, NaN and None as null."""
    out = []
    for row in frame.drop(columns=["label", "score"]).to_dict("records"):
        row = {key: None if isinstance(value, float) and np.isnan(value) else value
               for key, value in row.items()}
        if row["photo"] is not None:
            row["photo"] = base64.b64encode(row["photo"]).decode()
        out.append(row)
    return out


@pytest.fixture(scope="module")
def model() -> Any:
    return fit(SPEC, table(160, seed=0))


@pytest.fixture(scope="module")
def bundle(model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model.save(tmp_path_factory.mktemp("serve") / "bundle")


@pytest.fixture(scope="module")
def unseen() -> pd.DataFrame:
    """Rows the model has not seen, with a missing number, an unseen category, a missing
    image, non-ASCII text, and a missing flag (skipped: empty prediction)."""
    frame = table(12, seed=1)
    frame.loc[1, "age"] = np.nan
    frame.loc[2, "color"] = "purple"
    frame.loc[3, "photo"] = None
    frame.loc[4, "review"] = "Très GOOD, soft… déjà vu"
    frame.loc[5, "member"] = None
    frame.loc[6, "review"] = ""
    return frame


@pytest.fixture(scope="module")
def server(bundle: Path) -> Any:
    """``python -m plait serve`` with an API key and small limits; its base URL."""
    with serving(bundle, "--max-records", str(MAX_RECORDS), "--max-body-bytes", str(MAX_BODY),
                 "--max-batch", "4", "--batch-wait-ms", "5", env={"PLAIT_API_KEY": KEY}) as url:
        yield url


def post(url: str, body: Any, headers: dict | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/v1/predict", content=content, timeout=30,
                      headers={"Content-Type": "application/json", **(AUTH if headers is None else headers)})


def assert_same_predictions(answer: list[dict], expected: pd.DataFrame) -> None:
    assert len(answer) == len(expected)
    assert set(answer[0]) == set(expected.columns)
    got = pd.DataFrame(answer)[list(expected.columns)]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, rtol=1e-5, atol=1e-6)


def test_fast_encoding_equals_the_input_encoders(model: Any, unseen: pd.DataFrame) -> None:
    from plait.inference import Predictor

    expected = encode_inputs(model.spec, model.states_, read_table(unseen.drop(columns=["label", "score"])))
    batch = Predictor(model, max_batch=4).encode(records(unseen))
    assert batch.arrays.keys() == expected.inputs.keys()
    for name, array in expected.inputs.items():
        assert batch.arrays[name].dtype == array.dtype, name
        np.testing.assert_array_equal(batch.arrays[name], array, err_msg=name)
    np.testing.assert_array_equal(batch.kept, expected.kept)
    assert not batch.kept[5]


def test_predictions_equal_model_predict(server: str, model: Any, unseen: pd.DataFrame) -> None:
    response = post(server, records(unseen))
    assert response.status_code == 200, response.text
    answer = response.json()["predictions"]
    assert_same_predictions(answer, model.predict(unseen))
    assert set(answer[0]) == {"label", "label_proba_old", "label_proba_other", "label_proba_red", "score"}
    assert all(row["label"] is None for row in answer[5:6])


def test_schema_describes_each_input_and_output(server: str, model: Any) -> None:
    described = httpx.get(f"{server}/v1/schema", headers=AUTH).json()
    inputs = {entry["name"]: entry for entry in described["inputs"]}
    assert [entry["type"] for entry in described["inputs"]] == [
        "number", "category", "text", "image", "vector", "binary"]
    assert sorted(inputs["color"]["values"]) == ["blue", "green", "red"]
    assert inputs["review"]["length"] == 6
    assert inputs["review"]["vocabulary_size"] == len(WORDS) + 2
    assert inputs["photo"]["size"] == [8, 8] and inputs["photo"]["channels"] == 3
    assert inputs["readings"]["size"] == 3
    assert inputs["member"]["values"] == ["no", "yes"] and inputs["member"]["missing"] == "skip"
    assert inputs["age"]["mean"] == pytest.approx(model.states_["age"].mean)
    assert [inputs[name]["widget"] for name in ("age", "color", "review", "photo", "readings", "member")] == [
        "number", "select", "textarea", "file", "json", "select"]
    outputs = {entry["name"]: entry for entry in described["outputs"]}
    assert outputs["label"]["columns"] == ["label"] + [f"label_proba_{c}" for c in ("old", "other", "red")]
    assert outputs["score"]["columns"] == ["score"]
    assert described["limits"] == {"max_records": MAX_RECORDS, "max_body_bytes": MAX_BODY}
    assert described["api_key"] is True


GOOD = {"age": 30, "color": "red", "review": "good", "readings": [0, 1, 2], "member": "yes"}
NOT_AN_IMAGE = base64.b64encode(b"plain text, not an image").decode()


@pytest.mark.parametrize(("body", "status", "expected"), [
    ([{"age": "old"}], 422, "record 0, field 'age': found 'old'; expected a number"),
    ([GOOD, {"photo": "/etc/hostname"}], 422, "record 1, field 'photo': found '/etc/hostname'; expected "
                                              "base64 image data"),
    ([GOOD, GOOD, {"photo": NOT_AN_IMAGE}], 422, "record 2, field 'photo': cannot decode the image"),
    ([GOOD, {"colour": "red"}], 422, "record 1, field 'colour': unknown field; expected fields: "
                                     "['age', 'color', 'review', 'photo', 'readings', 'member']"),
    ([GOOD, {"member": "maybe"}], 422, "record 1, field 'member': found 'maybe'; expected one of "
                                       "['no', 'yes']"),
    ([{"review": {"text": "good"}}], 422,
     "record 0, field 'review': found {'text': 'good'}; expected text, a number, true/false, or null"),
    ([{"readings": [1, 2]}], 422, "record 0, field 'readings': found 'a list of 2 numbers'; expected 3 "
                                  "numbers"),
    ([{"readings": [1, [2], 3]}], 422, "record 0, field 'readings': found [1, [2], 3]; expected a list"),
    ([GOOD, 7], 422, "record 1: found int 7; expected an object"),
    ({"age": 3}, 422, "found a JSON dict; expected a list of records"),
    (b'[{"age": 3', 400, "the request body is not valid JSON"),
])
def test_bad_requests_name_the_record_and_field(server: str, body: Any, status: int, expected: str) -> None:
    response = post(server, body)
    assert response.status_code == status
    assert expected in response.json()["detail"]
    assert post(server, [GOOD]).status_code == 200


def test_limits_on_body_size_and_records(server: str) -> None:
    too_many = post(server, [GOOD] * (MAX_RECORDS + 1))
    assert too_many.status_code == 413
    assert f"found {MAX_RECORDS + 1} records; expected at most {MAX_RECORDS}" in too_many.json()["detail"]
    too_big = post(server, [{**GOOD, "review": "good " * 30_000}])
    assert too_big.status_code == 413
    assert f"over {MAX_BODY} bytes" in too_big.json()["detail"]
    assert post(server, [GOOD] * MAX_RECORDS).status_code == 200
    assert post(server, []).json() == {"predictions": []}


def test_explain_returns_what_drove_each_record(server: str, model: Any, unseen: pd.DataFrame) -> None:
    sent = records(unseen)
    response = httpx.post(f"{server}/v1/predict", params={"explain": "true"}, json=sent, headers=AUTH,
                          timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert_same_predictions(body["predictions"], model.predict(unseen.drop(columns=["label", "score"])))
    explained = body["explanations"]
    assert explained[5] is None  # the missing flag: skipped, no prediction to explain
    kept = [row for row in range(len(unseen)) if row != 5]
    expected = model.attribute(unseen.drop(columns=["label", "score"]).drop(index=5).reset_index(drop=True),
                               rows=list(range(len(kept))))["rows"]
    for row, want in zip(kept, expected, strict=True):
        got = explained[row]
        assert got.keys() == {"label", "score"}
        for output in ("label", "score"):
            for got_unit, want_unit in zip(got[output], want["outputs"][output], strict=True):
                assert got_unit["unit"] == want_unit["unit"]
                for name, entry in want_unit["inputs"].items():
                    assert got_unit["inputs"][name]["total"] == pytest.approx(entry["total"], abs=1e-4)
    words = [word for word, _ in explained[4]["score"][0]["inputs"]["review"]["units"]]
    assert words == ["Tr", "s", "GOOD", "soft", "d", "j"]  # as the model reads it: 6 words, ASCII letters
    assert explained[0]["label"][0]["inputs"]["photo"]["kind"] == "regions"
    too_many = httpx.post(f"{server}/v1/predict?explain=true", json=sent * 2, headers=AUTH, timeout=30)
    assert too_many.status_code == 422
    assert "found 24 records with explain=true; expected at most 16" in too_many.json()["detail"]


def test_api_key_is_required(server: str) -> None:
    assert post(server, [GOOD], headers={}).status_code == 401
    assert post(server, [GOOD], headers={"X-API-Key": "wrong"}).status_code == 401
    assert httpx.get(f"{server}/v1/schema").status_code == 401
    assert post(server, [GOOD], headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/openapi.json").json()["components"]["securitySchemes"]["APIKey"]["name"] == \
        "X-API-Key"


def test_concurrent_requests_share_model_calls(server: str, model: Any) -> None:
    frame = table(48, seed=2)
    sent = records(frame)
    before = httpx.get(f"{server}/v1/stats", headers=AUTH).json()

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server, headers=AUTH, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/predict", json=[record]) for record in sent))

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * len(sent)
    assert_same_predictions([r.json()["predictions"][0] for r in responses], model.predict(frame))
    after = httpx.get(f"{server}/v1/stats", headers=AUTH).json()
    assert after["requests"] - before["requests"] == len(sent)
    assert after["model_calls"] - before["model_calls"] < len(sent)
    assert after["largest_batch"] > 1


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample ``/metrics`` shows, by name and labels; asked without the API key, as a
    scraper would."""
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_refusals_and_batches(server: str) -> None:
    before = scrape(server)
    for size in range(1, 6):  # one at a time: a batch each, the last over --max-batch 4
        assert post(server, [GOOD] * size).status_code == 200
    for status, body in {400: b"[", 413: [GOOD] * (MAX_RECORDS + 1), 422: [{"age": "old"}]}.items():
        assert post(server, body).status_code == status
    assert post(server, [GOOD], headers={}).status_code == 401
    after = scrape(server)

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    expected = {"200": 5, "400": 1, "401": 1, "413": 1, "422": 1}
    assert {s: grew("plait_requests_total", endpoint="/v1/predict", status=s) for s in expected} == expected
    assert grew("plait_request_duration_seconds_count", endpoint="/v1/predict") == 9
    assert grew("plait_requests_total", endpoint="/metrics", status="200") == 1
    assert grew("plait_records_total") == grew("plait_batch_size_sum") == 1 + 2 + 3 + 4 + 5
    assert grew("plait_batch_size_count") == grew("plait_model_call_seconds_count") == 5
    assert [grew("plait_batch_size_bucket", le=le) for le in ("1.0", "2.0", "4.0", "+Inf")] == [1, 2, 4, 5]
    assert grew("plait_model_call_seconds_sum") > 0
    assert "/metrics" not in httpx.get(f"{server}/openapi.json").json()["paths"]


def burst(url: str, count: int) -> int:
    """``count`` one-record predictions sent at once, each on a connection of its own."""

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/predict", json=[GOOD]) for _ in range(count)))

    assert [r.status_code for r in asyncio.run(send_all())] == [200] * count
    return count


def processes_that_predicted(folder: Path) -> set[str]:
    """The worker processes whose own metric file counts a prediction."""
    return {path.stem for path in folder.glob("counter_*.db")
            for metric in MultiProcessCollector.merge([str(path)]) for s in metric.samples
            if s.name == "plait_requests_total" and s.labels["endpoint"] == "/v1/predict" and s.value}


def test_metrics_add_up_over_workers(bundle: Path, tmp_path: Path) -> None:
    with serving(bundle, "--workers", "2", "--max-batch", "4", env={"TMPDIR": str(tmp_path)}) as url:
        [folder] = tmp_path.glob("plait-metrics-*")
        # Each connection goes to whichever worker accepts it first, and the second worker may
        # still be loading the model: send bursts until both have answered some.
        sent, deadline = 0, time.monotonic() + 120
        while len(processes_that_predicted(folder)) < 2 and time.monotonic() < deadline:
            sent += burst(url, 8)
        assert len(processes_that_predicted(folder)) == 2
        for _ in range(4):  # whichever worker answers the scrape shows the totals
            samples = scrape(url)
            assert sample(samples, "plait_requests_total", endpoint="/v1/predict", status="200") == sent
            assert sample(samples, "plait_request_duration_seconds_count", endpoint="/v1/predict") == sent
            assert sample(samples, "plait_batch_size_sum") == sample(samples, "plait_records_total") == sent
    assert not folder.exists()


def test_fuzzing_from_the_openapi_description(server: str, tmp_path: Path) -> None:
    command = [str(Path(sys.executable).parent / "st"), "run", f"{server}/openapi.json",
               "--checks", "not_a_server_error,status_code_conformance,content_type_conformance",
               "--max-examples", "25", "--max-time", "12", "--seed", "1", "--workers", "1",
               "--generation-database", "none", "--no-color", "-H", f"X-API-Key: {KEY}",
               "--report-dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Tested: 4" in result.stdout and "No issues found" in result.stdout, result.stdout
    assert post(server, [GOOD]).status_code == 200


def test_page_predicts_in_chromium(server: str, model: Any, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    frame = table(1, seed=3)
    image = tmp_path / "photo.png"
    image.write_bytes(frame.loc[0, "photo"])
    expected = model.predict(frame).iloc[0]
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page()
        page.goto(server + "/")
        page.fill("#api-key", KEY)
        page.click("text=Use key")
        page.wait_for_selector("#predict")
        assert page.locator("select#field-color option").count() == 4
        page.fill("#field-age", str(frame.loc[0, "age"]))
        page.select_option("#field-color", frame.loc[0, "color"])
        page.fill("#field-review", frame.loc[0, "review"])
        page.set_input_files("#field-photo", str(image))
        page.fill("#field-readings", json.dumps(frame.loc[0, "readings"]))
        page.select_option("#field-member", frame.loc[0, "member"])
        page.click("#predict")
        label = page.locator("[data-output=label] .prediction")
        label.wait_for()
        assert label.text_content() == expected["label"]
        shown = {row.get_attribute("data-label"): float(row.locator(".value").text_content())
                 for row in page.locator("[data-output=label] .probability").all()}
        assert shown == pytest.approx({c: expected[f"label_proba_{c}"] for c in ("old", "other", "red")},
                                      abs=1e-3)
        score = float(page.locator("[data-output=score] .prediction").text_content())
        assert score == pytest.approx(expected["score"], rel=1e-4)
        browser.close()
