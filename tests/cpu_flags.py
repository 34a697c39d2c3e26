"""XLA flags of every test process: fake CPU devices, and XLA's backend optimisation level 0.

The tests compile many tiny programs and run each a few times, so compiling, not running, is their
cost. Level 0 skips LLVM's optimisation of the generated code: it changes how fast a program runs,
never what it computes. Measured on 2 cores (benchmarks/train_step.py, the tiny VAE stage): the
init program compiles in 3.2 s instead of 9.5, the train step in 10.4 s instead of 16.4, and the
step then runs in 226 ms instead of 120. Users' programs keep XLA's default level.
"""

OPT = "--xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a test process with ``devices`` fake CPU devices."""
    return f"--xla_force_host_platform_device_count={devices} {OPT}"
