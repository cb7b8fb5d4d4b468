"""``plait serve``: an HTTP service for a bundle, with a page to try the model.

Endpoints: ``POST /v1/predict`` (a JSON list of records in, the columns ``plait predict``
writes out, one object per record), ``GET /v1/schema`` (each input's fields, type and
accepted values or shape), ``GET /v1/stats`` (requests, records, model calls),
``GET /healthz``, ``GET /`` (a form built from the schema) and the OpenAPI description at
``/docs`` and ``/openapi.json``.

Concurrent requests are gathered into batches: a single task takes the waiting requests
from a queue (up to ``max_batch`` records, waiting at most ``batch_wait_ms`` for more) and
runs them through the model in one call on a worker thread, while the event loop keeps
accepting requests. When ``PLAIT_API_KEY`` is set, the ``/v1`` endpoints need it, in an
``X-API-Key`` header or as ``Authorization: Bearer KEY``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from plait.errors import PlaitError
from plait.inference import Batch, Predictor, RecordError

API_KEY_VARIABLE = "PLAIT_API_KEY"
SETTINGS_VARIABLE = "PLAIT_SERVE_SETTINGS"
"""How ``--workers`` hands the settings to each worker process."""


@dataclass(frozen=True)
class Settings:
    """What ``plait serve`` was asked for.

    >>> Settings(bundle="runs/reviews").max_records
    1000
    """

    bundle: str
    max_body_bytes: int = 10 * 1024 * 1024
    max_records: int = 1000
    max_batch: int = 32
    batch_wait_ms: float = 1.0

    def check(self) -> None:
        for name in ("max_body_bytes", "max_records", "max_batch"):
            if getattr(self, name) < 1:
                raise PlaitError(f"--{name.replace('_', '-')}: found {getattr(self, name)}; expected "
                                 "a positive number")
        if self.batch_wait_ms < 0:
            raise PlaitError(f"--batch-wait-ms: found {self.batch_wait_ms}; expected 0 or more")


class RequestError(Exception):
    """A request the service refuses: its HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, record: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.record, self.field = status, message, record, field

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, "record": self.record, "field": self.field}


@dataclass
class Job:
    batch: Batch
    future: asyncio.Future


@dataclass
class Stats:
    requests: int = 0
    records: int = 0
    rejected: int = 0
    batches: int = 0
    largest_batch: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)


class Batcher:
    """Gathers the records of concurrent requests into shared model calls.

    One task takes a request from the queue, then every request already waiting, and keeps
    waiting up to ``max_wait`` seconds while the batch has fewer than ``max_batch``
    records and other requests are still being received or encoded (a lone client never
    waits); the model runs on one worker thread, so requests keep arriving meanwhile and
    form the next batch.
    """

    def __init__(self, predictor: Predictor, max_batch: int, max_wait: float, stats: Stats) -> None:
        self.predictor, self.max_batch, self.max_wait, self.stats = predictor, max_batch, max_wait, stats
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plait-model")
        self.task: asyncio.Task | None = None
        self.arriving = 0

    @contextmanager
    def arrival(self) -> Iterator[None]:
        """Marks a request being received and encoded: the batch being formed may wait for it."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.serve_forever())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.thread.shutdown(wait=False)

    async def predict(self, batch: Batch) -> dict[str, np.ndarray]:
        """The model's raw outputs for the batch's records, from a shared model call."""
        job = Job(batch, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        return await job.future

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self.gather()
            jobs = [job for job in jobs if not job.future.done()]
            if not jobs:
                continue
            arrays = {name: np.concatenate([job.batch.arrays[name] for job in jobs])
                      for name in jobs[0].batch.arrays}
            try:
                raw = await loop.run_in_executor(self.thread, self.predictor.run, arrays)
            except Exception as error:  # every waiting request gets the failure, the service goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            self.count(sum(job.batch.rows for job in jobs))
            start = 0
            for job in jobs:
                end = start + job.batch.rows
                if not job.future.done():
                    job.future.set_result({name: values[start:end] for name, values in raw.items()})
                start = end

    async def gather(self) -> list[Job]:
        jobs = [await self.queue.get()]
        rows = jobs[0].batch.rows
        await asyncio.sleep(0)  # handlers that are already runnable enqueue their records first
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while rows < self.max_batch:
            if self.queue.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or not self.arriving:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                jobs.append(self.queue.get_nowait())
            rows += jobs[-1].batch.rows
        return jobs

    def count(self, rows: int) -> None:
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, rows)
        self.stats.batch_sizes[rows] = self.stats.batch_sizes.get(rows, 0) + 1


def request_schema(predictor: Predictor, max_records: int) -> dict[str, Any]:
    properties = {name: spec.field_schema() for spec in predictor.spec.inputs
                  for name in spec.source_columns()}
    record = {"type": "object", "properties": properties, "additionalProperties": False}
    return {"type": "array", "items": record, "maxItems": max_records}


def schema(predictor: Predictor, settings: Settings, keyed: bool) -> dict[str, Any]:
    spec, states = predictor.spec, predictor.states
    return {
        "bundle": Path(settings.bundle).name,
        "inputs": [s.schema(states[s.name]) for s in spec.inputs],
        "outputs": [out.schema(states[out.name]) for out in spec.outputs],
        "fields": predictor.fields,
        "limits": {"max_records": settings.max_records, "max_body_bytes": settings.max_body_bytes},
        "api_key": keyed,
    }


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    too_large = RequestError(413, f"request body over {limit} bytes (--max-body-bytes)")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def parse_records(body: bytes, max_records: int) -> list[Any]:
    try:
        records = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise RequestError(400, f"the request body is not valid JSON: {error}") from None
    if not isinstance(records, list):
        raise RequestError(422, f"found a JSON {type(records).__name__}; expected a list of records, "
                           'e.g. [{"field": value, ...}]')
    if len(records) > max_records:
        raise RequestError(413, f"found {len(records)} records; expected at most {max_records} "
                           "(--max-records)")
    return records


def as_rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Columns of equal length as one dict per row."""
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def key_checker(key: str | None) -> Callable[[Request], None]:
    """A check that the request carries the API key (none when no key is set)."""

    def check(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("x-api-key")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
        if given is None or not hmac.compare_digest(given.encode(), key.encode()):
            raise RequestError(401, "missing or wrong API key: send it as an X-API-Key header or "
                               "as Authorization: Bearer KEY")

    return check


def create_app(settings: Settings, model: Any = None) -> FastAPI:
    """The FastAPI application serving ``settings.bundle`` (or an already loaded model).

    The model is compiled for every batch size it will see before the app is returned, so
    the first requests are as fast as the later ones.
    """
    from contextlib import asynccontextmanager

    import plait
    from plait.model import Model
    from plait.serve_page import PAGE, PAGE_SECURITY

    settings.check()
    model = model if model is not None else Model.load(settings.bundle)
    predictor = Predictor(model, settings.max_batch)
    predictor.warm_up()
    key = os.environ.get(API_KEY_VARIABLE) or None
    authorize = key_checker(key)
    stats = Stats()
    batcher = Batcher(predictor, settings.max_batch, settings.batch_wait_ms / 1000, stats)
    described = schema(predictor, settings, key is not None)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=f"plait: {Path(settings.bundle).name}", version=plait.__version__, lifespan=lifespan,
                  description="Predictions from a plait bundle. Errors carry `detail` (a message "
                  "naming the record and field), `record` and `field`.")

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> Response:
        stats.rejected += 1
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    errors = error_responses()
    request_body = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": request_schema(predictor, settings.max_records)}}}}
    if key is not None:
        request_body["security"] = [{"APIKey": []}, {"Bearer": []}]

    @app.post("/v1/predict", openapi_extra=request_body, responses=errors, summary="Predict records")
    async def predict(request: Request) -> Response:
        """One object per record with the columns `plait predict` writes: each output's
        prediction, and its class probabilities (`<output>_proba`, `<output>_proba_<label>`)."""
        with batcher.arrival():
            authorize(request)
            records = parse_records(await read_body(request, settings.max_body_bytes), settings.max_records)
            try:
                # A few records encode in microseconds; many (images) would hold up the event loop.
                if len(records) <= 16:
                    batch = predictor.encode(records)
                else:
                    batch = await run_in_threadpool(predictor.encode, records)
            except RecordError as error:
                raise RequestError(422, str(error), error.record, error.field) from None
        stats.requests += 1
        stats.records += batch.rows
        raw = await batcher.predict(batch) if batch.rows else predictor.empty_outputs()
        return JSONResponse({"predictions": as_rows(predictor.decode(raw, batch.kept))})

    @app.get("/v1/schema", responses={401: errors[401]}, summary="The inputs and outputs")
    async def get_schema(request: Request) -> Response:
        """Each input's fields, type and accepted values or shape; each output's columns."""
        authorize(request)
        return JSONResponse(described)

    @app.get("/v1/stats", responses={401: errors[401]}, summary="Counters of this process")
    async def get_stats(request: Request) -> Response:
        """Requests and records served, requests refused, model calls and batch sizes."""
        authorize(request)
        return JSONResponse({**asdict(stats), "model_calls": predictor.calls,
                             "batch_sizes": {str(k): v for k, v in sorted(stats.batch_sizes.items())}})

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": PAGE_SECURITY,
                                           "X-Content-Type-Options": "nosniff"})

    if key is not None:
        add_security(app)
    return app


def error_responses() -> dict[int, dict[str, Any]]:
    """The refusals, as the OpenAPI description lists them."""
    body = {"type": "object", "properties": {"detail": {"type": "string"},
                                             "record": {"type": ["integer", "null"]},
                                             "field": {"type": ["string", "null"]}}}
    meanings = {400: "Not JSON", 401: "Missing or wrong API key", 413: "Body or batch over the limits",
                422: "A record or field that cannot be used"}
    return {code: {"description": text, "content": {"application/json": {"schema": body}}}
            for code, text in meanings.items()}


def add_security(app: FastAPI) -> None:
    """Declare the API key schemes in the OpenAPI description."""
    original = app.openapi

    def openapi() -> dict:
        described = original()
        described.setdefault("components", {})["securitySchemes"] = {
            "APIKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        }
        return described

    app.openapi = openapi


def app_from_environment() -> FastAPI:
    """The app for one ``--workers`` process, from the settings the parent put in the
    environment."""
    return create_app(Settings(**json.loads(os.environ[SETTINGS_VARIABLE])))


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          access_log: bool = False) -> None:
    """Run the service until interrupted; with several workers, each process loads the bundle."""
    import uvicorn

    from plait.bundle import verify

    settings.check()
    verify(Path(settings.bundle))
    options: dict[str, Any] = {"host": host, "port": port, "access_log": access_log, "log_level": "info"}
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    os.environ[SETTINGS_VARIABLE] = json.dumps(asdict(settings))
    uvicorn.run("plait.serve:app_from_environment", factory=True, workers=workers, **options)

