"""Export: a checkpoint as model.pt2, model.onnx and model.json; inference without training code."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEFAULT, FAST, REPO, run_cli
from fakes import write_torchvision_weights

# What python -m project.infer must run without: Lightning and every training module.
NOT_FOR_INFERENCE = [
    "lightning",
    "torchmetrics",
    "jsonargparse",
    "project.cli",
    "project.data",
    "project.models",
    "project.callbacks",
    "project.losses",
    "project.export",
]

BLOCKED_INFER = """
import importlib.abc, json, runpy, sys
blocked = tuple(json.loads(sys.argv.pop(1)))

class Deleted(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in blocked or name.startswith(tuple(b + "." for b in blocked)):
            raise ModuleNotFoundError(f"{name} is not there", name=name)
        return None

sys.meta_path.insert(0, Deleted())
sys.argv[0] = "project.infer"
runpy.run_module("project.infer", run_name="__main__")
"""


def read_predictions(path: Path) -> dict[str, tuple[str, list[float]]]:
    """``path -> (predicted class, probabilities)`` from a predictions CSV."""
    with path.open() as file:
        rows = list(csv.reader(file))
    return {Path(r[0]).name: (r[1], [float(p) for p in r[3:]]) for r in rows[1:]}


def infer(model: Path, images: Path, output: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *(sys.executable, "-c", BLOCKED_INFER, json.dumps(NOT_FOR_INFERENCE)),
            *(str(model), str(images), "--output", str(output)),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


def fit_and_export(*overrides: str) -> Path:
    """Fits the default config briefly with ``overrides``, exports its best checkpoint;
    returns the export folder."""
    run_cli("fit", *DEFAULT, *FAST, *overrides, "--test_after_fit=false")
    run_cli("export", *DEFAULT, *FAST, *overrides, "--ckpt_path=best")
    (folder,) = Path("logs/default").glob("version_*/export")
    return folder.resolve()


@pytest.mark.slow
def test_exported_files_predict_what_predict_writes_without_training_code(workdir: Path):
    folder = fit_and_export()
    sidecar = json.loads((folder / "model.json").read_text())
    assert sidecar["class_names"] == [str(d) for d in range(10)]
    assert (sidecar["channels"], sidecar["input_size"]) == (1, [16, 16])
    assert (sidecar["resize_size"], sidecar["crop_size"]) == (16, 16)
    assert sidecar["parity"]["pt2"] <= 1e-5 and sidecar["parity"]["onnx"] <= 1e-4
    assert Path(sidecar["checkpoint"]).is_file()

    # New images, as a user would bring them: some digits and a file that is no image.
    photos = workdir / "photos"
    photos.mkdir()
    for digit in range(10):
        for source in sorted(Path(f"data/digits/{digit}").glob("*.png"))[:3]:
            shutil.copy(source, photos / f"{digit}-{source.name}")
    (photos / "notes.png").write_text("not an image")
    predict = run_cli(
        "predict", *DEFAULT, *FAST, "--ckpt_path=best", f"--data.init_args.predict_root={photos}"
    )
    written = next(c.written for c in predict.trainer.callbacks if hasattr(c, "written"))
    expected = read_predictions(written)
    assert len(expected) == 30

    for name, bound in (("model.pt2", 1e-5), ("model.onnx", 1e-4)):
        output = workdir / f"{name}.csv"
        done = infer(folder / name, photos, output)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "skipped" in done.stderr and "notes.png" in done.stderr
        got = read_predictions(output)
        assert got.keys() == expected.keys()
        for image, (predicted, probabilities) in got.items():
            assert predicted == expected[image][0], image
            pairs = zip(probabilities, expected[image][1], strict=True)
            difference = max(abs(a - b) for a, b in pairs)
            assert difference <= bound + 1e-6, (name, image, difference)  # CSVs keep 6 decimals


@pytest.mark.slow
@pytest.mark.parametrize(
    "net",
    [
        [
            "--model.init_args.net=project.models.resnet.ResNet",
            "--model.init_args.net.init_args.blocks=[1, 1]",
            "--model.init_args.net.init_args.widths=[8, 16]",
        ],
        [
            "--model.init_args.net=project.models.backbones.TorchvisionNet",
            "--model.init_args.net.init_args.name=mobilenet_v3_small",
            "--model.init_args.net.init_args.weights=DEFAULT",
        ],
    ],
    ids=["resnet", "torchvision-backbone"],
)
def test_resnet_and_a_pretrained_backbone_export_within_the_parity_bounds(
    workdir: Path, net: list[str]
):
    if "weights=DEFAULT" in net[-1]:
        write_torchvision_weights("mobilenet_v3_small")  # offline: where torchvision looks
    folder = fit_and_export(*net)
    sidecar = json.loads((folder / "model.json").read_text())
    assert sidecar["parity"]["pt2"] <= 1e-5 and sidecar["parity"]["onnx"] <= 1e-4
    import torch

    program = torch.export.load(folder / "model.pt2").module()
    for batch in (1, 3):  # the batch dimension is free
        images = torch.randint(0, 256, (batch, 1, 16, 16), dtype=torch.uint8)
        probabilities = program(images)
        assert probabilities.shape == (batch, 10)
        assert torch.allclose(probabilities.sum(dim=1), torch.ones(batch), atol=1e-5)


@pytest.mark.slow
def test_an_export_that_does_not_match_its_checkpoint_fails_in_one_line(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    from project import export
    from project.errors import at_the_door

    run_cli("fit", *DEFAULT, *FAST, "--test_after_fit=false")
    monkeypatch.setitem(export.PARITY, "pt2", -1.0)  # no difference is small enough
    with pytest.raises(SystemExit) as stopped, at_the_door():
        run_cli("export", *DEFAULT, *FAST, "--ckpt_path=last", "--onnx=false")
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "error: export:" in error and "model.pt2 differs from the checkpoint" in error
    assert "Traceback" not in error


def test_infer_names_what_it_lacks(tmp_path: Path):
    model = tmp_path / "model.pt2"
    model.write_bytes(b"")
    done = infer(model, tmp_path, tmp_path / "out.csv")
    assert done.returncode != 0
    assert f"error: {tmp_path / 'model.json'} is missing" in done.stderr
    assert "Traceback" not in done.stderr


def test_export_is_a_subcommand_of_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "project", "export", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for option in ("--ckpt_path", "--output", "--onnx", "--opset", "--samples"):
        assert option in done.stdout


def test_infer_refuses_a_program_that_would_unpickle_code_before_loading_it(tmp_path: Path):
    import io
    import os
    import zipfile

    import torch

    from project.infer import load_predictor

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    def payload() -> bytes:
        buffer = io.BytesIO()
        torch.save(Payload(), buffer)
        return buffer.getvalue()

    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),)), good)

    def crafted(name: str, edit) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
            for item in source.infolist():
                target.writestr(item, edit(item.filename, source.read(item.filename)))
        return path

    def pickled_weight(name: str, data: bytes) -> bytes:
        if name.endswith("_weights_config.json"):
            config = json.loads(data)
            for entry in config["config"].values():
                entry["use_pickle"] = True
            return json.dumps(config).encode()
        return payload() if "/weights/weight_" in name else data

    def pickled_inputs(name: str, data: bytes) -> bytes:
        return payload() if "/sample_inputs/" in name else data

    (tmp_path / "notes.pt2").write_text("not a program")
    cases = {
        crafted("weight.pt2", pickled_weight): "is stored as a pickled object",
        crafted("inputs.pt2", pickled_inputs): "is not plain tensors",
        tmp_path / "notes.pt2": "is not a program written by torch.export.save",
    }
    for path, reason in cases.items():
        with pytest.raises(SystemExit) as error:
            load_predictor(path)
        message = str(error.value)
        assert len(message.splitlines()) == 1 and str(path) in message and reason in message
    assert not marker.exists(), "the crafted program's code ran"
    assert load_predictor(good)(torch.ones(1, 2)).shape == (1, 2)
