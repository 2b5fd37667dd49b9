"""Serving: python -m project.serve answers concurrent requests as the model does offline."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import DEFAULT, FAST, REPO, free_port, make_workdir, run_cli

pytest.importorskip("litserve", reason="serving is the [serve] extra; make install has it")

LIMIT = 20_000  # --max-bytes of the server under test


def post(url: str, body: bytes, content_type: str = "image/png") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return answer.status, answer.read().decode()


def multipart(data: bytes, name: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body holding ``data`` as the file field ``name``."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, digits_tree: Path) -> Iterator[dict]:
    """A model trained briefly and exported, served on a free port of 127.0.0.1."""
    folder = make_workdir(tmp_path_factory.mktemp("serve"), digits_tree)
    before = Path.cwd()
    os.chdir(folder)
    try:
        run_cli("fit", *DEFAULT, *FAST, "--test_after_fit=false")
        run_cli("export", *DEFAULT, *FAST, "--ckpt_path=best", "--onnx=false")
    finally:
        os.chdir(before)
    (model,) = folder.glob("logs/default/version_*/export/model.pt2")
    from project.serve import running

    options = (f"--max-bytes={LIMIT}", "--batch-timeout=0.02")
    with running(model, free_port(), *options) as url:
        yield {
            "url": url,
            "model": model,
            "folder": folder,
            "images": sorted(folder.glob("data/digits/*/*.png")),
        }


@pytest.mark.slow
def test_concurrent_requests_each_get_the_offline_prediction_of_their_image(served: dict):
    from project.infer import load_predictor, predict, prepared_images, read_sidecar

    images = served["images"][:200]
    sidecar = read_sidecar(served["model"])
    unusable: list = []
    offline = predict(
        load_predictor(served["model"]), prepared_images(images, sidecar, unusable), 64
    )
    expected = {path: probabilities.tolist() for path, probabilities in offline}
    assert not unusable and len(expected) == 200

    def ask(index_and_path: tuple[int, Path]) -> tuple[Path, int, dict]:
        index, path = index_and_path
        data = path.read_bytes()
        # Every fourth one as a form upload (curl -F), the others as the raw file.
        body, kind = multipart(data) if index % 4 == 0 else (data, "image/png")
        return (path, *post(f"{served['url']}/predict", body, kind))

    with ThreadPoolExecutor(max_workers=16) as clients:
        answers = list(clients.map(ask, enumerate(images)))
    assert len(answers) == 200
    names = sidecar["class_names"]
    for path, status, answer in answers:
        assert status == 200, (path, answer)
        probabilities = [answer["probabilities"][name] for name in names]
        wanted = expected[path]
        assert answer["predicted"] == names[wanted.index(max(wanted))], path
        assert max(abs(a - b) for a, b in zip(probabilities, wanted, strict=True)) <= 1e-5


@pytest.mark.slow
def test_a_bad_request_gets_a_4xx_in_one_line_and_the_server_goes_on(served: dict, tmp_path: Path):
    from PIL import Image

    good = served["images"][0].read_bytes()
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(rgb)
    cases = {
        "not an image": (b"hello, not a picture", 415, "not an image"),
        "empty body": (b"", 400, "empty body"),
        "three channels for a grayscale model": (rgb.read_bytes(), 422, "3 channels"),
        "over the size limit": (b"\x89PNG" + bytes(LIMIT), 413, "limit is 20,000"),
    }
    for case, (body, status, reason) in cases.items():
        got, answer = post(f"{served['url']}/predict", body)
        assert got == status, (case, answer)
        assert reason in answer["detail"] and "\n" not in answer["detail"], (case, answer)
        assert post(f"{served['url']}/predict", good)[0] == 200, f"no answer after {case}"
    with urllib.request.urlopen(f"{served['url']}/health", timeout=5) as answer:
        assert answer.read() == b"ok"


# The README's Deploy commands, after its `python -m project export` (which the served
# fixture runs, as tests/test_readme.py runs every `python -m project` line).
DEPLOY = [
    shlex.split(line)
    for line in (REPO / "README.md").read_text().splitlines()
    if line.startswith(("python -m project.infer ", "python -m project.serve "))
]


@pytest.mark.slow
def test_the_readme_s_infer_and_serve_commands_run_as_written(served: dict):
    folder = served["folder"]
    (infer,) = [args for args in DEPLOY if args[2] == "project.infer"]
    (serve,) = [args for args in DEPLOY if args[2] == "project.serve"]
    # Export wrote where the README's commands look.
    assert (folder / infer[3]).resolve() == served["model"].resolve()
    assert (folder / serve[3]).resolve() == served["model"].resolve()
    done = subprocess.run(
        [sys.executable, *infer[1:]], cwd=folder, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with (folder / infer[infer.index("--output") + 1]).open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(list((folder / infer[4]).glob("*.png")))
    # The fixture's server is the README's command (project.serve.running runs
    # `python -m project.serve MODEL --port PORT`) on a free port: 8000 may be taken here.
    assert serve[4:] == ["--port", "8000"], "the README's serve command has another option"
    status, health = get(f"{served['url']}/health")
    assert status == 200, health
