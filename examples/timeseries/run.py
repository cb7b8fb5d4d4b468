"""Prepare the time series sets, train each config here with ``plait train`` and score it
with ``plait evaluate`` on the published TEST split.

    python examples/timeseries/run.py [CONFIG.yaml ...] [--out runs/timeseries]

Without configs it runs every ``*.yaml`` beside this file; a config named ``<set>…yaml``
trains on ``<set>/train.parquet``. Training chooses its epoch on a validation split of the
TRAIN rows (the configs' ``early_stopping``); the TEST rows are read once, by
``plait evaluate``. Prints one table row per config and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def plait(*arguments: str | Path) -> None:
    subprocess.run([sys.executable, "-m", "plait", *map(str, arguments)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", type=Path, default=sorted(HERE.glob("*.yaml")))
    parser.add_argument("--out", type=Path, default=Path("runs/timeseries"))
    options = parser.parse_args()
    data = options.out / "data"
    subprocess.run([sys.executable, str(HERE / "prepare.py"), str(data)], check=True)
    results = []
    for config in options.configs:
        dataset = config.stem.split("-")[0]
        bundle = options.out / config.stem
        started = time.perf_counter()
        plait("train", config, "--data", data / dataset / "train.parquet", "--out", bundle, "--quiet",
              "--no-report")
        seconds = time.perf_counter() - started
        metrics_file = options.out / f"{config.stem}-test-metrics.json"
        plait("evaluate", bundle, "--data", data / dataset / "test.parquet", "--out", metrics_file)
        label = json.loads(metrics_file.read_text(encoding="utf-8"))["label"]
        history = json.loads((bundle / "history.json").read_text(encoding="utf-8"))
        losses = history.get("val_loss") or history.get("loss", [])
        results.append({"config": config.name, "test_accuracy": label["accuracy"], "test_rows": label["rows"],
                        "epochs_run": len(losses), "best_val_loss_epoch": losses.index(min(losses)) + 1,
                        "train_seconds": round(seconds, 1)})
    print("\n| config | test accuracy | test rows | epochs run | best epoch (val_loss) | train seconds |\n"
          "|---|---|---|---|---|---|")
    for row in results:
        print(f"| {row['config']} | {row['test_accuracy']:.3f} | {row['test_rows']} | {row['epochs_run']} | "
              f"{row['best_val_loss_epoch']} | {row['train_seconds']:.0f} |")
    (options.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
