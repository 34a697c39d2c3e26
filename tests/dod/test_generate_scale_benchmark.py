"""benchmarks/generate_scale.py without running the SD-size models: its cases, the paper-size
config it builds, and the report row (the benchmark itself needs an accelerator)."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load():
    spec = importlib.util.spec_from_file_location(
        "generate_scale", os.path.join(ROOT, "benchmarks", "generate_scale.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cases_and_bad_cases():
    mod = load()
    assert mod.parse_case("1024x128") == (1024, 128)
    with pytest.raises(ValueError, match="FRAMESxPIXELS"):
        mod.parse_case("1024")


def test_the_paper_size_configs():
    mod = load()
    smoke = mod.parse([])  # the default is a smoke test, not ~290 PFLOP of sampling
    assert smoke.cases == ["17x32"] and smoke.steps == 2 and smoke.mtd == "tiny"
    a = mod.parse(mod.PAPER)
    assert a.cases == ["1024x128", "3376x256"] and a.steps == 50 and a.mtd == "sd"
    c = mod.scale_config(a, 256, 3)
    # SD v1's UNet, CLIP-L's width, x8 latents: 3376 frames at 256 px are 32x32x4 latents.
    assert tuple(c.model.mtd.block_out_channels) == (320, 640, 1280, 1280)
    assert c.model.text.hidden_size == 768 and c.model.mtd.dtype == "bfloat16"
    assert tuple(c.data.resolution) == (256, 256) and c.data.frames_per_call == 16
    assert len(c.model.vae.block_out_channels) == 4  # three downsamplings: x8


def test_report_row():
    mod = load()
    row = dict(frames=1024, pixels=128, guidance=7.5, wall_s=9.5, compile_s=60.0,
               sequential_calls=3, chunks=[(1, 1), (1, 5), (1, 69)], peak_device_bytes=3 * 2**30,
               largest_program_bytes=2**30, model_tflop_per_s=312.0)
    assert mod.report_row(row) == ("| 1024 @ 128 px | 7.5 | 9.50 | 60.0 | 3 | [(1, 1), (1, 5), "
                                   "(1, 69)] | 3.00 GiB (device peak) | 312 |")
