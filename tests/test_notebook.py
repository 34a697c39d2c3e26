"""notebooks/nuwa_xl_demo.ipynb executed end to end with nbclient on CPU, its parameters cell set by
the test (as papermill would): loading the tiny model family (random weights) in the default run;
training the tiny config first (a few steps per stage) in the slow run, since compiling every
training stage takes minutes on 2 CPU cores."""
import os

import pytest
from cpu_flags import xla_flags
from tiny_family import write_random_family

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "nuwa_xl_demo.ipynb")


def execute(tmp_path, monkeypatch, **params):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n# set by the test\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    # The kernel inherits the environment: 2 fake devices keep the sharded calls small.
    monkeypatch.setenv("XLA_FLAGS", xla_flags(2))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("PYTHONPATH", ROOT)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


def outputs(nb):
    """(text of every output, mime types shown) of an executed notebook."""
    text, mimes = [], set()
    for c in nb.cells:
        for o in c.get("outputs", []):
            text.append(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")))
            mimes.update(o.get("data", {}))
    return "\n".join(text), mimes


def check(nb, tmp_path, frames):
    text, mimes = outputs(nb)
    assert f"{frames} frames (32, 32, 3)" in text
    assert "level 0: 4 frames" in text and "level 1: 10 frames" in text
    assert {"image/gif", "image/png"} <= mimes  # the video and the contact sheet, inline
    assert os.path.getsize(tmp_path / "notebook_video.mp4") > 0
    assert os.path.getsize(tmp_path / "notebook_video_sheet.png") > 0
    assert "'scene'" in text  # the probe's scores
    # the preview, resumed into the same video, then an edit of one scene
    assert "keyframes at frames [0, 3, 6, 9]" in text
    assert "resumed == the uninterrupted call: True" in text
    assert "frames byte-identical to the video before the edit" in text
    assert os.path.getsize(tmp_path / "notebook_edited_sheet.png") > 0


def test_notebook_loads_a_family_and_shows_a_long_video(tmp_path, monkeypatch):
    family = write_random_family(str(tmp_path / "family"))
    nb = execute(tmp_path, monkeypatch, WORKDIR=family, FRAMES=10)
    check(nb, tmp_path, 10)


@pytest.mark.slow
def test_notebook_trains_the_tiny_config(tmp_path, monkeypatch):
    steps = [f"--config.{block}.{field}={value}"
             for block in ("vae_train", "train")
             for field, value in (("steps", 4), ("checkpoint_every", 4), ("warmup_steps", 1))]
    nb = execute(tmp_path, monkeypatch, TRAIN_WORKDIR=str(tmp_path / "run"), TRAIN_OVERRIDES=steps)
    text, _ = outputs(nb)
    assert "--config=configs/synthetic.py:tiny" in text
    check(nb, tmp_path, 10)
