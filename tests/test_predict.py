"""nago predict: a trained digits network exported to ONNX classifies PNGs and .npy batches like torch does."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch import nn

from nago_spec.data import load_dataset
from nago_spec.errors import DataError, NagoError
from nago_spec.export import export_onnx
from nago_spec.network import Normalize, build_network
from nago_spec.pipeline import DataShape, build_space, sample_architecture
from nago_spec.predict import predict
from nago_spec.spec import load_spec
from nago_spec.train import train
from nago_spec.runners.cli import main

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 40


class _Times255(nn.Module):
    """Takes [0, 1] inputs to the [0, 255] the wrapped network expects."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 255


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> SimpleNamespace:
    """A quickstart-centre network trained 10 epochs on digits, exported for [0, 255] and [0, 1] input,
    with 40 test digits as PNGs and as one uint8 .npy, and torch's argmax on them."""
    root = tmp_path_factory.mktemp("predict")
    data = load_dataset("digits")
    spec = load_spec(REPO / "specs" / "quickstart.toml")
    space = build_space(spec)
    params = space.from_unit(np.full(space.dim, 0.5))
    arch = sample_architecture(spec, params, 0, DataShape.of(data))
    model = nn.Sequential(Normalize(data.mean, data.std), build_network(arch, 0))
    train(model, data, epochs=10, batch_size=64, lr=0.1, seed=0)
    model.eval()
    classes = json.dumps(list(data.classes))
    export_onnx(model, root / "digits.onnx", input_shape=(1, 8, 8), metadata={"nago.classes": classes})
    export_onnx(nn.Sequential(_Times255(), model), root / "unit.onnx", input_shape=(1, 8, 8),
                metadata={"nago.classes": classes, "nago.input_range": "[0, 1]"})
    x, y = data.x_test[:N_IMAGES], data.y_test[:N_IMAGES]
    pngs = []
    for i in range(N_IMAGES):
        pngs.append(root / f"digit_{i:02d}.png")
        Image.fromarray(x[i, 0].numpy(), mode="L").save(pngs[-1])
    np.save(root / "batch.npy", x.numpy())
    with torch.inference_mode():
        expected = model(x.float()).argmax(1).tolist()
    return SimpleNamespace(root=root, model=root / "digits.onnx", unit=root / "unit.onnx", pngs=pngs,
                           npy=root / "batch.npy", x=x, labels=y.tolist(), expected=expected)


def _indices(results: list[dict]) -> list[int]:
    return [r["top"][0]["index"] for r in results]


def test_pngs_and_npy_match_torch_and_beat_chance(case):
    from_png = predict(case.model, case.pngs)
    from_npy = predict(case.model, [case.npy])
    assert _indices(from_png) == case.expected
    assert _indices(from_npy) == case.expected
    assert [r["source"] for r in from_png] == [str(p) for p in case.pngs]
    assert [r["source"] for r in from_npy] == [f"{case.npy}[{i}]" for i in range(N_IMAGES)]
    assert from_png[0]["top"][0]["class"] == str(case.expected[0])
    assert 0 < from_png[0]["top"][0]["probability"] <= 1
    accuracy = np.mean(np.array(case.expected) == np.array(case.labels))
    assert accuracy >= 0.8, accuracy


def test_npy_layouts_dtypes_and_batches(case, tmp_path):
    x = case.x.numpy()
    np.save(tmp_path / "nhw.npy", x[:, 0])
    np.save(tmp_path / "nhwc.npy", x.transpose(0, 2, 3, 1))
    np.save(tmp_path / "float.npy", x.astype(np.float32))
    np.save(tmp_path / "one.npy", x[3, 0])
    np.save(tmp_path / "big.npy", np.concatenate([x] * 8))  # 320 images: two onnxruntime calls
    for name in ("nhw", "nhwc", "float"):
        assert _indices(predict(case.model, [tmp_path / f"{name}.npy"])) == case.expected, name
    one = predict(case.model, [tmp_path / "one.npy"])
    assert one[0]["source"] == str(tmp_path / "one.npy") and _indices(one) == [case.expected[3]]
    assert _indices(predict(case.model, [tmp_path / "big.npy"])) == case.expected * 8


def test_top_k_is_sorted_softmax(case):
    (result,) = predict(case.model, case.pngs[:1], top=3)
    top = result["top"]
    assert len(top) == 3 and top[0]["index"] == case.expected[0]
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9
    assert len(predict(case.model, case.pngs[:1], top=20)[0]["top"]) == 10
    full = predict(case.model, case.pngs[:1], top=10)[0]["top"]
    assert sum(t["probability"] for t in full) == pytest.approx(1.0)


def test_unit_range_model_gives_the_same_predictions(case, tmp_path):
    np.save(tmp_path / "unit.npy", case.x.numpy().astype(np.float32) / 255)
    assert _indices(predict(case.unit, case.pngs)) == case.expected
    assert _indices(predict(case.unit, [case.npy])) == case.expected
    assert _indices(predict(case.unit, [tmp_path / "unit.npy"])) == case.expected


def test_model_without_metadata_names_classes_by_index(case, tmp_path):
    proto = onnx.load(str(case.model), load_external_data=False)
    del proto.metadata_props[:]
    onnx.save_model(proto, str(tmp_path / "bare.onnx"))
    results = predict(tmp_path / "bare.onnx", case.pngs)
    assert [r["top"][0]["class"] for r in results] == [str(i) for i in case.expected]


def test_images_of_another_size_are_resized_with_a_warning(case, tmp_path, caplog):
    big = Image.open(case.pngs[0]).resize((32, 32), Image.Resampling.NEAREST).convert("RGB")
    big.save(tmp_path / "big.png")
    with caplog.at_level(logging.WARNING, logger="nago_spec.predict"):
        (result,) = predict(case.model, [tmp_path / "big.png"])
    assert result["top"][0]["index"] == case.expected[0]
    assert [r.getMessage() for r in caplog.records] == [
        f"resized 1 image(s) to 8x8 with bilinear resampling (first: {tmp_path / 'big.png'})"
    ]


def test_cli_plain_top_and_json(case, capsys):
    files = [str(p) for p in case.pngs]
    assert main(["predict", str(case.model), *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == N_IMAGES
    assert [line.split(": ")[1].split(" (")[0] for line in lines] == [str(i) for i in case.expected]
    assert lines[0].startswith(f"{case.pngs[0]}: {case.expected[0]} (") and lines[0].endswith(")")

    assert main(["predict", str(case.model), files[0], "--top", "3"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{files[0]}: ") and line.count("(") == 3 and line.count(", ") == 2

    assert main(["predict", str(case.model), str(case.npy), "--json", "--top", "2"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert _indices(results) == case.expected and all(len(r["top"]) == 2 for r in results)
    assert set(results[0]) == {"source", "top"} and set(results[0]["top"][0]) == {"class", "index", "probability"}


def test_wrong_shape_is_one_line_and_exit_2(case, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 1, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"bad\.npy: array of shape \[5, 1, 28, 28\] .* expected \[N, 1, 8, 8\]"):
        predict(case.model, [bad])
    assert main(["predict", str(case.model), str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith(f"error: {bad}: array of shape [5, 1, 28, 28]")


@pytest.mark.parametrize("which", ["model", "input"])
def test_missing_file_is_one_line_and_exit_2(case, tmp_path, capsys, which):
    missing = tmp_path / "nowhere.png"
    model, files = (missing, case.pngs[:1]) if which == "model" else (case.model, [case.pngs[0], missing])
    with pytest.raises(DataError, match=r"nowhere\.png: no such file"):
        predict(model, files)
    assert main(["predict", str(model), *map(str, files)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"error: {missing}: no such file\n"


@pytest.mark.parametrize("name, content, pattern", [
    ("notes.txt", b"hello", r"notes\.txt: unknown suffix '\.txt'"),
    ("broken.png", b"not a png", r"broken\.png: cannot read the image"),
    ("broken.npy", b"not an array", r"broken\.npy: cannot read the array"),
])
def test_unusable_files_name_the_path(case, tmp_path, name, content, pattern):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=pattern):
        predict(case.model, [tmp_path / name])


def test_an_unusable_model_is_exit_1(case, tmp_path, capsys):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not a model")
    with pytest.raises(NagoError, match=r"model\.onnx: onnxruntime cannot load it") as info:
        predict(model, case.pngs[:1])
    assert not isinstance(info.value, DataError)
    assert main(["predict", str(model), str(case.pngs[0])]) == 1
    assert capsys.readouterr().err.startswith(f"error: {model}: onnxruntime cannot load it")
