"""Noise schedules and the forward process: betas, cumulative alphas, ``q_sample``, and the
epsilon / v parameterisations (conversions to x0 and eps, training targets).

A :class:`Schedule` holds float64 numpy arrays. It is a compile-time constant, never a traced
value: samplers derive their per-step coefficients from it in float64 (log-SNR differences near
t=0 lose digits in float32) and hand float32 tables to the device. It hashes by identity, so it
can be a static argument of ``jax.jit``.

Conventions: timesteps are integers ``0 .. N-1``; ``alphas_cumprod[t]`` is abar_t of
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps. ``t`` may have any leading shape that prefixes
``x`` (``[B]``, or per frame ``[B, F]``); coefficients broadcast over the remaining dims.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.configuration.diffusion import DiffusionConfig

SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v")


def make_betas(name: str, num_train_timesteps: int, beta_start: float = 1e-4,
               beta_end: float = 2e-2) -> np.ndarray:
    """``[N]`` float64 betas.

    - ``linear``: DDPM's linspace(beta_start, beta_end) (Ho et al.; 1e-4 .. 0.02).
    - ``scaled_linear``: Stable Diffusion's linspace(sqrt(beta_start), sqrt(beta_end)) ** 2
      (SD v1: 0.00085 .. 0.012).
    - ``cosine``: Nichol & Dhariwal's abar(t) = cos^2(((t/N + s) / (1 + s)) pi/2), s = 0.008,
      betas clipped at 0.999; beta_start / beta_end are not used.
    """
    n = num_train_timesteps
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"num_train_timesteps must be a positive integer, got {n!r}")
    if name == "linear":
        return np.linspace(beta_start, beta_end, n, dtype=np.float64)
    if name == "scaled_linear":
        return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), n, dtype=np.float64) ** 2
    if name == "cosine":
        s = 0.008
        f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
        u = np.arange(n + 1, dtype=np.float64) / n
        abar = f(u) / f(0.0)
        return np.minimum(1.0 - abar[1:] / abar[:-1], 0.999)
    raise ValueError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete noise schedule (float64 numpy arrays) and the model's parameterisation."""
    name: str
    betas: np.ndarray
    alphas_cumprod: np.ndarray
    prediction_type: str = "epsilon"

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}; choose one of "
                             f"{', '.join(PREDICTION_TYPES)}")

    @property
    def num_train_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def table(self, name: str):
        """A float32 device array of a per-timestep quantity, for gathers inside jitted code."""
        a = self.alphas_cumprod
        values = {"sqrt_alphas_cumprod": np.sqrt(a),
                  "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - a),
                  "alphas_cumprod": a, "betas": self.betas}[name]
        return jnp.asarray(values, jnp.float32)


def make_schedule(name: str = "scaled_linear", num_train_timesteps: int = 1000,
                  beta_start: float = 0.00085, beta_end: float = 0.012,
                  prediction_type: str = "epsilon") -> Schedule:
    betas = make_betas(name, num_train_timesteps, beta_start, beta_end)
    if not (np.all(betas > 0) and np.all(betas < 1)):
        raise ValueError(f"betas of the {name!r} schedule must lie in (0, 1); check beta_start="
                         f"{beta_start} and beta_end={beta_end}")
    return Schedule(name, betas, np.cumprod(1.0 - betas), prediction_type)


def from_config(c: Any) -> Schedule:
    """The schedule of a :class:`DiffusionConfig` (a ConfigDict ``diffusion`` block is checked
    into one first)."""
    c = DiffusionConfig.from_dict(c)
    return make_schedule(c.schedule, c.num_train_timesteps, c.beta_start, c.beta_end,
                         c.prediction_type)


def _expand(coef, x):
    """``coef`` of shape ``t.shape`` -> broadcastable against ``x`` (trailing singleton dims)."""
    coef = jnp.asarray(coef)
    if coef.ndim > x.ndim or x.shape[:coef.ndim] != coef.shape:
        raise ValueError(f"timesteps of shape {coef.shape} must prefix the data shape {x.shape}")
    return coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim)).astype(x.dtype)


def _coefs(schedule: Schedule, t, x):
    t = jnp.asarray(t, jnp.int32)
    return (_expand(schedule.table("sqrt_alphas_cumprod")[t], x),
            _expand(schedule.table("sqrt_one_minus_alphas_cumprod")[t], x))


def q_sample(schedule: Schedule, x0, t, noise):
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
    a, s = _coefs(schedule, t, x0)
    return a * x0 + s * noise


def velocity(x0, noise, sqrt_abar, sqrt_one_minus_abar):
    """v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho)."""
    return sqrt_abar * noise - sqrt_one_minus_abar * x0


def training_target(schedule: Schedule, x0, noise, t):
    """What the network learns to output at ``(x_t, t)``: eps, or v."""
    if schedule.prediction_type == "epsilon":
        return noise
    a, s = _coefs(schedule, t, x0)
    return velocity(x0, noise, a, s)


def min_snr_weight(schedule: Schedule, t, gamma: float):
    """Min-SNR-gamma loss weight of timesteps ``t`` (Hang et al. 2023): min(SNR, gamma) / SNR for
    epsilon targets, min(SNR, gamma) / (SNR + 1) for v; all ones when ``gamma`` is 0."""
    if not gamma:
        return jnp.ones(jnp.shape(t), jnp.float32)
    abar = jnp.asarray(schedule.alphas_cumprod, jnp.float32)[t]
    snr = abar / (1.0 - abar)
    denom = snr + 1.0 if schedule.prediction_type == "v" else snr
    return jnp.minimum(snr, gamma) / denom


def split_prediction(prediction_type: str, x_t, model_output, sqrt_abar, sqrt_one_minus_abar):
    """(x0, eps) from a model output, given broadcastable sqrt(abar_t) and sqrt(1 - abar_t)."""
    a, s = sqrt_abar, sqrt_one_minus_abar
    if prediction_type == "epsilon":
        eps = model_output
        return (x_t - s * eps) / a, eps
    if prediction_type == "v":
        v = model_output
        return a * x_t - s * v, s * x_t + a * v
    raise ValueError(f"unknown prediction_type {prediction_type!r}; choose one of "
                     f"{', '.join(PREDICTION_TYPES)}")


def predict_x0_eps(schedule: Schedule, x_t, t, model_output):
    """(x0, eps) from a model output at integer timesteps ``t`` (per example or per frame)."""
    a, s = _coefs(schedule, t, x_t)
    return split_prediction(schedule.prediction_type, x_t, model_output, a, s)
