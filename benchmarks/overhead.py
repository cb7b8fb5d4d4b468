"""Overhead: a plait model against the same architecture written by hand with the Keras
functional API, on the same pre-encoded arrays, backend, optimizer and batch size.

plait trains the way ``Model.fit`` does: its ``Batches`` (a ``keras.utils.PyDataset``
whose batch order depends only on seed and epoch) with the ``EpochOrder`` callback. The
hand-written model gets the arrays straight into ``keras.Model.fit(..., shuffle=True)``.
The two are timed alternately, one epoch each; the ratio is the median over rounds of the
two times in the same round.
Prediction is timed on the encoded arrays (the graph plait built against the hand-written
one) and from the raw table through ``Model.predict_arrays`` (encoding included).
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
from common import alternate, image_spec, image_table, paired_ratio, text_spec, text_table

BATCH = 256


def hand_written_tabular(keras: Any, group_slots: int) -> tuple[dict, list]:
    """The shared tabular part, as one would write it: an Input per column, the category
    embedded and flattened."""
    from keras import layers

    inputs = {name: keras.Input(shape=(1,), name=name) for name in ("a", "b", "c")}
    inputs["group"] = keras.Input(shape=(1,), dtype="int32", name="group")
    group = layers.Flatten()(layers.Embedding(group_slots, 8)(inputs["group"]))
    return inputs, [inputs["a"], inputs["b"], inputs["c"], group]


def hand_written_head(keras: Any, inputs: dict, branches: list) -> Any:
    from keras import layers, metrics

    x = layers.Concatenate()(branches)
    x = layers.Dense(64, activation="relu")(x)
    outputs = {"liked": layers.Dense(1, activation="sigmoid", name="liked")(x),
               "score": layers.Dense(1, name="score")(x)}
    model = keras.Model(inputs=inputs, outputs=outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.001),
        loss={"liked": "binary_crossentropy", "score": "mean_squared_error"},
        loss_weights={"liked": 1.0, "score": 0.5},
        metrics={"liked": [metrics.BinaryAccuracy(name="accuracy"), metrics.AUC(name="auc")],
                 "score": [metrics.MeanAbsoluteError(name="mae")]},
    )
    return model


def hand_written_text(states: dict) -> Any:
    import keras
    from keras import layers

    inputs, branches = hand_written_tabular(keras, len(states["group"].vocabulary) + 1)
    length = states["review"].length
    inputs["review"] = keras.Input(shape=(length,), dtype="int32", name="review")
    words = layers.Embedding(len(states["review"].vocabulary) + 2, 32, mask_zero=True)(inputs["review"])
    branches.append(layers.GlobalAveragePooling1D()(words))
    return hand_written_head(keras, inputs, branches)


def hand_written_image(states: dict, size: int = 32) -> Any:
    import keras
    from keras import layers

    inputs, branches = hand_written_tabular(keras, len(states["group"].vocabulary) + 1)
    inputs["photo"] = keras.Input(shape=(size, size, 3), name="photo")
    x = inputs["photo"]
    for filters in (16, 32):
        x = layers.MaxPooling2D(2)(layers.Conv2D(filters, 3, activation="relu")(x))
    branches.append(layers.Flatten()(x))
    return hand_written_head(keras, inputs, branches)


def encoded(model: Any, table: Any) -> tuple[dict, dict]:
    """The model-ready inputs and targets of a table, with the model's fitted states."""
    from plait.data import read_table
    from plait.preprocess import encode_inputs, encode_targets

    table = read_table(table)
    x = encode_inputs(model.spec, model.states_, table).inputs
    y = {name: target.values for name, target in encode_targets(model.spec, model.states_, table).items()}
    return x, y


def compare(name: str, spec: dict, table: Any, hand_written: Any, rounds: int) -> dict[str, Any]:
    import plait
    from plait.training import Batches, EpochOrder, Part

    rows = table.num_rows
    model = plait.Model(spec, verbose=0).fit(table)
    plait_keras = model.keras_model
    x, y = encoded(model, table)
    hand = hand_written(model.states_)
    if hand.count_params() != plait_keras.count_params():
        raise RuntimeError(f"{name}: the hand-written model has {hand.count_params()} parameters, "
                           f"plait's {plait_keras.count_params()}; they must be the same architecture")
    batches = Batches([Part(x, y, None)], BATCH, seed=0)

    def plait_epoch() -> None:
        plait_keras.fit(batches, epochs=1, shuffle=False, callbacks=[EpochOrder(batches)], verbose=0)

    def hand_epoch() -> None:
        hand.fit(x, y, batch_size=BATCH, epochs=1, shuffle=True, verbose=0)

    def plait_predict() -> None:
        plait_keras.predict(x, batch_size=BATCH, verbose=0)

    def hand_predict() -> None:
        hand.predict(x, batch_size=BATCH, verbose=0)

    def plait_predict_raw() -> None:
        model.predict_arrays(table)

    for warm_up in (plait_epoch, hand_epoch, plait_predict, hand_predict, plait_predict_raw):
        warm_up()
    train = alternate({"plait": plait_epoch, "hand": hand_epoch}, rounds)
    predict = alternate({"plait": plait_predict, "hand": hand_predict, "raw": plait_predict_raw}, rounds)
    median = {kind: {name: statistics.median(values) for name, values in times.items()}
              for kind, times in (("train", train), ("predict", predict))}
    return {
        "rows": rows, "batch_size": BATCH, "rounds": rounds, "params": int(hand.count_params()),
        "train_examples_per_s": {"plait": rows / median["train"]["plait"],
                                 "hand_written": rows / median["train"]["hand"]},
        "predict_examples_per_s": {"plait": rows / median["predict"]["plait"],
                                   "hand_written": rows / median["predict"]["hand"],
                                   "plait_from_raw_table": rows / median["predict"]["raw"]},
        "train_ratio": paired_ratio(train, "plait", "hand"),
        "predict_ratio": paired_ratio(predict, "plait", "hand"),
        "predict_from_raw_ratio": paired_ratio(predict, "raw", "hand"),
    }


def run(quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 5
    text_rows, image_rows, size = (1_024, 512, 16) if quick else (20_000, 4_096, 32)
    models = {
        "tabular_text": compare("tabular_text", text_spec(BATCH), text_table(text_rows),
                                hand_written_text, rounds),
        "tabular_image": compare("tabular_image", image_spec(BATCH, size), image_table(image_rows, size=size),
                                 lambda states: hand_written_image(states, size), rounds),
    }
    return {
        "train_ratio": float(np.min([m["train_ratio"] for m in models.values()])),
        "predict_ratio": float(np.min([m["predict_ratio"] for m in models.values()])),
        "models": models,
    }
