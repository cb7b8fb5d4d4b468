"""``plait serve``: an HTTP service for a bundle, with a page to try the model.

Endpoints: ``POST /v1/predict`` (a JSON list of records in, the columns ``plait predict``
writes out, one object per record), ``GET /v1/schema`` (each input's fields, type and
accepted values or shape), ``GET /v1/stats`` (requests, records, model calls),
``GET /healthz``, ``GET /metrics`` (Prometheus text format: requests by endpoint and status,
latency, batch sizes, model-call time; summed over the ``--workers`` processes), ``GET /``
(a form built from the schema) and the OpenAPI description at ``/docs`` and
``/openapi.json``.

Concurrent requests are gathered into batches: a single task takes the waiting requests
from a queue (up to ``max_batch`` records, waiting at most ``batch_wait_ms`` for more) and
runs them through the model in one call on a worker thread, while the event loop keeps
accepting requests. When ``PLAIT_API_KEY`` is set, the ``/v1`` endpoints need it, in an
``X-API-Key`` header or as ``Authorization: Bearer KEY``; ``/metrics`` stays open, as
scrapers expect.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.concurrency import run_in_threadpool

from plait.attribution import STEPS
from plait.errors import PlaitError
from plait.inference import Batch, Predictor, RecordError, buckets

API_KEY_VARIABLE = "PLAIT_API_KEY"
MAX_EXPLAINED = 16
"""Records one ``?explain=true`` request may hold."""
SETTINGS_VARIABLE = "PLAIT_SERVE_SETTINGS"
"""How ``--workers`` hands the settings to each worker process."""
METRICS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus_client's multiprocess mode: the folder where each process keeps its metrics,
read whole by every scrape. It must be set before prometheus_client is imported."""

# Requests take about a millisecond alone and up to a few hundred under load.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MODEL_CALL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                      0.5, 1.0, 2.5)


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


class Metrics:
    """The Prometheus metrics of one app, in a registry of its own, so that several apps in
    one process keep apart.

    With ``PROMETHEUS_MULTIPROC_DIR`` set (``--workers``), every process writes its values to
    files there and a scrape reads all of them: whichever worker answers shows the totals.
    There are no gauges, so a dead worker needs no marking: its counts stay in the totals.
    """

    def __init__(self, max_batch: int) -> None:
        folder = os.environ.get(METRICS_VARIABLE)
        if folder:  # prometheus_client writes there from the first metric on
            os.makedirs(folder, exist_ok=True)
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter("plait_requests", "HTTP requests answered, by endpoint and status.",
                                ["endpoint", "status"], registry=registry)
        self.latency = Histogram("plait_request_duration_seconds", "Time from receiving a request "
                                 "to the end of its answer.", ["endpoint"], buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self.records = Counter("plait_records", "Records in the prediction requests accepted.",
                               registry=registry)
        # The sizes the model is compiled for; a batch over --max-batch runs in several calls.
        self.batch_size = Histogram("plait_batch_size", "Records per batch run through the model.",
                                    buckets=buckets(max_batch), registry=registry)
        self.model_time = Histogram("plait_model_call_seconds", "Time the model took for a batch.",
                                    buckets=MODEL_CALL_BUCKETS, registry=registry)
        self.scraped = registry
        if folder:
            self.scraped = CollectorRegistry()
            MultiProcessCollector(self.scraped)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def batch(self, rows: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.model_time.observe(seconds)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format the scraper asked for (Prometheus text by default), and
        its content type."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.scraped), content_type


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class MetricsMiddleware:
    """Counts and times every HTTP request by route and status.

    It sits around the exception handlers, so a refusal is counted with the status of its
    answer; a plain ASGI middleware, since it runs on every request and Starlette's
    ``BaseHTTPMiddleware`` costs more.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], metrics: Metrics,
                 paths: frozenset[str]) -> None:
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # One series per route, not one per path a client makes up.
        endpoint = scope["path"] if scope["path"] in self.paths else "other"
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.metrics.request(endpoint, status, time.perf_counter() - started)


class Batcher:
    """Gathers the records of concurrent requests into shared model calls.

    One task takes a request from the queue, then every request already waiting, and keeps
    waiting up to ``max_wait`` seconds while the batch has fewer than ``max_batch``
    records and other requests are still being received or encoded (a lone client never
    waits); the model runs on one worker thread, so requests keep arriving meanwhile and
    form the next batch.
    """

    def __init__(self, predictor: Predictor, max_batch: int, max_wait: float, stats: Stats,
                 metrics: Metrics) -> None:
        self.predictor, self.max_batch, self.max_wait, self.stats = predictor, max_batch, max_wait, stats
        self.metrics = metrics
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
                raw, seconds = await loop.run_in_executor(self.thread, self.timed_run, arrays)
            except Exception as error:  # every waiting request gets the failure, the service goes on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            self.count(sum(job.batch.rows for job in jobs), seconds)
            start = 0
            for job in jobs:
                end = start + job.batch.rows
                if not job.future.done():
                    job.future.set_result({name: values[start:end] for name, values in raw.items()})
                start = end

    def timed_run(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """The model's outputs and the seconds it took, timed on the model's thread so that
        the hand-over to it is not counted."""
        started = time.perf_counter()
        raw = self.predictor.run(arrays)
        return raw, time.perf_counter() - started

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

    def count(self, rows: int, seconds: float) -> None:
        self.metrics.batch(rows, seconds)
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
    stats, metrics = Stats(), Metrics(settings.max_batch)
    batcher = Batcher(predictor, settings.max_batch, settings.batch_wait_ms / 1000, stats, metrics)
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
    async def predict(request: Request, explain: bool = False) -> Response:
        """One object per record with the columns `plait predict` writes: each output's
        prediction, and its class probabilities (`<output>_proba`, `<output>_proba_<label>`).
        With `?explain=true` (at most 16 records), also `explanations`: per record, what drove
        each output (integrated gradients: each input's share, per word, image region, step,
        value or tag), as `plait explain --rows` writes them."""
        with batcher.arrival():
            authorize(request)
            records = parse_records(await read_body(request, settings.max_body_bytes), settings.max_records)
            if explain:
                return JSONResponse(await explained(records))
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
        metrics.records.inc(batch.rows)
        raw = await batcher.predict(batch) if batch.rows else predictor.empty_outputs()
        return JSONResponse({"predictions": as_rows(predictor.decode(raw, batch.kept))})

    async def explained(records: list[Any]) -> dict[str, Any]:
        if len(records) > MAX_EXPLAINED:
            raise RequestError(422, f"found {len(records)} records with explain=true; expected at most "
                               f"{MAX_EXPLAINED} (each takes {STEPS} gradient passes)")
        try:
            predictions, explanations = await run_in_threadpool(predictor.explain, records)
        except RecordError as error:
            raise RequestError(422, str(error), error.record, error.field) from None
        stats.requests += 1
        stats.records += len(records)
        metrics.records.inc(len(records))
        return {"predictions": as_rows(predictions), "explanations": explanations}

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

    # Open without the API key, as Prometheus scrapers expect; counters hold no record data.
    @app.get("/metrics", include_in_schema=False)
    async def get_metrics(request: Request) -> Response:
        body, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    if key is not None:
        add_security(app)
    paths = frozenset(route.path for route in app.routes if hasattr(route, "path"))
    app.add_middleware(MetricsMiddleware, metrics=metrics, paths=paths)
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
    with metrics_folder():
        uvicorn.run("plait.serve:app_from_environment", factory=True, workers=workers, **options)


@contextmanager
def metrics_folder() -> Iterator[None]:
    """A ``PROMETHEUS_MULTIPROC_DIR`` for the workers about to start, so that each scrape
    shows the totals of all of them: a fresh temporary folder, removed on exit, unless one
    is set already (then it is the caller's to empty between runs)."""
    if os.environ.get(METRICS_VARIABLE):
        yield
        return
    folder = tempfile.mkdtemp(prefix="plait-metrics-")
    os.environ[METRICS_VARIABLE] = folder  # the spawned workers inherit it before importing anything
    try:
        yield
    finally:
        os.environ.pop(METRICS_VARIABLE, None)
        shutil.rmtree(folder, ignore_errors=True)

