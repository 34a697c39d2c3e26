"""Test setup: 8 fake CPU devices (set before JAX is imported) so sharding tests run anywhere."""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
