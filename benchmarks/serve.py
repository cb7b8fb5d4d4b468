"""``plait serve`` under load, on loopback: latency and throughput at several concurrency
levels, beside the in-process ``Model.predict`` latency for one record.

    python benchmarks/serve.py [--bundle DIR] [--heavy] [--seconds 4] [--levels 1,4,16,64]

Without ``--bundle`` it trains a small model first (a number, a category, a text of 20
words and a 16×16 image in; a three-class label and a number out) into ``runs/bench``;
``--heavy`` makes the image 64×64 with a wider convolution stack and reads the text with
an LSTM, so that the model itself costs milliseconds per call.
The server runs in a subprocess (``python -m plait serve``); the clients are asyncio
keep-alive connections in this process, each sending one record per request and waiting
for the answer before sending the next, for ``--seconds`` per level. The clients share the
machine's cores with the server, so the figures include their cost.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["good", "bad", "fine", "great", "awful", "soft", "warm", "cold", "small", "large", "blue", "red",
         "nice", "poor", "ok"]


def png(rng: np.random.Generator, size: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def frame(rows: int, seed: int, image_size: int = 16) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, rows)
    color = rng.choice(["red", "green", "blue", "black"], rows)
    return pd.DataFrame({
        "age": age, "color": color,
        "review": [" ".join(rng.choice(WORDS, 20)) for _ in range(rows)],
        "photo": [png(rng, image_size) for _ in range(rows)],
        "label": np.where(age > 45, "old", np.where(color == "red", "red", "other")),
        "score": age * 2 + rng.normal(0, 1, rows),
    })


SPEC = {
    "inputs": [
        {"name": "age", "type": "number"},
        {"name": "color", "type": "category"},
        {"name": "review", "type": "text", "length": 20},
        {"name": "photo", "type": "image", "size": [16, 16], "encoder": {"filters": [8, 16]}},
    ],
    "head": {"layers": [32]},
    "outputs": [{"name": "label", "type": "category"}, {"name": "score", "type": "number"}],
    "train": {"epochs": 3, "batch_size": 512, "validation_split": 0.0},
}


HEAVY_INPUTS = {
    "review": {"name": "review", "type": "text", "length": 20, "encoder": {"kind": "lstm", "units": 32}},
    "photo": {"name": "photo", "type": "image", "size": [64, 64], "encoder": {"filters": [32, 64]}},
}


def train_bundle(path: Path, heavy: bool) -> Path:
    import plait

    spec = dict(SPEC)
    if heavy:
        spec["inputs"] = [HEAVY_INPUTS.get(entry["name"], entry) for entry in SPEC["inputs"]]
    return plait.Model(spec, verbose=0).fit(frame(500, seed=0, image_size=64 if heavy else 16)).save(path)


def as_record(row: dict) -> dict:
    return {"age": float(row["age"]), "color": row["color"], "review": row["review"],
            "photo": base64.b64encode(row["photo"]).decode()}


def in_process(bundle: Path, sample: Any, calls: int = 200) -> dict[str, float]:
    """Median milliseconds for one record: ``Model.predict`` and the server's own predictor."""
    import plait
    from plait.inference import Predictor

    model = plait.load(bundle)
    one = sample.iloc[:1]
    record = [as_record(one.iloc[0].to_dict())]
    predictor = Predictor(model, max_batch=1)
    timings: dict[str, list[float]] = {"Model.predict": [], "Predictor.predict": []}
    for action, name in [(lambda: model.predict(one), "Model.predict"),
                         (lambda: predictor.predict(record), "Predictor.predict")]:
        for _ in range(5):
            action()
        for _ in range(calls):
            start = time.perf_counter()
            action()
            timings[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in timings.items()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(bundle: Path, port: int, extra: list[str]) -> tuple[subprocess.Popen, float]:
    import httpx

    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "plait", "serve", str(bundle), "--port", str(port),
                                *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read().decode()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, time.perf_counter() - started
        except httpx.TransportError:
            time.sleep(0.05)


class Connection:
    """One keep-alive HTTP/1.1 connection, written by hand: httpx's own cost per request
    (about a millisecond of CPU) would be measured along with the server's otherwise."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, body: bytes) -> tuple[int, bytes]:
        self.writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                          b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def load(port: int, bodies: list[bytes], concurrency: int, seconds: float) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    failures = 0
    stats_url = f"http://127.0.0.1:{port}/v1/stats"
    stats_before = httpx.get(stats_url).json()
    connections = [await Connection.open(port) for _ in range(concurrency)]
    stop = time.perf_counter() + seconds

    async def user(connection: Connection, offset: int) -> None:
        nonlocal failures
        index = offset
        while time.perf_counter() < stop:
            body = bodies[index % len(bodies)]
            index += concurrency
            start = time.perf_counter()
            status, _ = await connection.post(body)
            latencies.append(time.perf_counter() - start)
            failures += status != 200

    began = time.perf_counter()
    await asyncio.gather(*(user(connection, i) for i, connection in enumerate(connections)))
    elapsed = time.perf_counter() - began
    for connection in connections:
        connection.close()
    stats_after = httpx.get(stats_url).json()
    latencies.sort()
    batches = stats_after["batches"] - stats_before["batches"]
    return {"requests": len(latencies), "failures": failures,
            "p50": latencies[len(latencies) // 2] * 1000,
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            "rps": len(latencies) / elapsed,
            "batch": (stats_after["records"] - stats_before["records"]) / max(batches, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle to serve (default: train a small one)")
    parser.add_argument("--heavy", action="store_true", help="train a larger model (64×64 images, LSTM)")
    parser.add_argument("--seconds", type=float, default=4.0, help="load time per concurrency level")
    parser.add_argument("--levels", default="1,4,16,64", help="concurrency levels")
    parser.add_argument("--server-args", default="", help="extra plait serve flags, e.g. '--batch-wait-ms 0'")
    options = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import psutil

    name = "serve-bundle-heavy" if options.heavy else "serve-bundle"
    bundle = options.bundle or train_bundle(ROOT / "runs" / "bench" / name, options.heavy)
    sample = frame(256, seed=1, image_size=64 if options.heavy else 16)
    bodies = [json.dumps([as_record(row)]).encode() for row in sample.to_dict("records")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"bundle: {bundle}")
    baseline = in_process(bundle, sample)
    for name, milliseconds in baseline.items():
        print(f"in process, one record, {name}: median {milliseconds:.2f} ms")
    port = free_port()
    process, startup = start_server(bundle, port, options.server_args.split())
    try:
        rss = psutil.Process(process.pid).memory_info().rss / 2**20
        print(f"server start (process start to /healthz answering): {startup:.1f} s; "
              f"memory (RSS): {rss:.0f} MiB")
        print(f"{'clients':>7} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} "
              f"{'records/call':>12} {'p50 / Model.predict':>19}")
        for level in (int(n) for n in options.levels.split(",")):
            result = asyncio.run(load(port, bodies, level, options.seconds))
            print(f"{level:>7} {result['requests']:>8} {result['p50']:>7.2f} {result['p99']:>7.2f} "
                  f"{result['rps']:>7.0f} {result['batch']:>12.1f} "
                  f"{result['p50'] / baseline['Model.predict']:>19.2f}"
                  + (f"  ({result['failures']} failed)" if result["failures"] else ""))
        rss = psutil.Process(process.pid).memory_info().rss / 2**20
        print(f"server memory after the load (RSS): {rss:.0f} MiB")
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
