"""Samplers: DDPM ancestral (the paper's), DDIM (eta) and DPM-Solver++(2M), with classifier-free
guidance and given (known) frames.

Every sampler is one jitted ``lax.scan`` over all its steps. The three differ only in a per-step
coefficient table, computed in float64 from the :class:`Schedule` at trace time, so one scan body
serves them all::

    x_next = A x_t + B x0 + C eps + D x0_prev + sigma z

where (x0, eps) come from the model output at this step and x0_prev from the previous step.

The denoiser is ``model_fn(x_t, t, **cond) -> prediction`` (eps or v, as the schedule says).
Everything in ``cond`` is fixed for the whole loop: encode prompts and given frames before calling
``sample`` (e.g. ``cond={"states": ..., "features": ...}``, entries may be pytrees) so the scan body
runs only the denoiser itself.
``x`` may have any leading dims; ``t`` is int32 of shape ``x.shape[:t_ndim]`` (``[B]`` by default,
per frame ``[B, F]`` when ``given_t`` is set). Call ``sample`` inside your own ``jax.jit`` with the
model parameters as an argument (the scan is then part of your program), or directly: the loop is
jitted with ``model_fn`` static, so reuse the same callable to reuse the compilation.

Given frames [ours]: where ``mask == 1`` the sampler writes the clean condition ``given`` into x
before every model call, after every update, and at the end, so they come back bit-exact. The model
sees them clean, with the step's t (default) or with ``given_t`` (e.g. 0: "this frame is clean")
when the model takes per-frame t. Training must show the model the same thing (docs/diffusion.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax.diffusion.schedules import Schedule, split_prediction

SPACINGS = ("linspace", "logsnr")


def timesteps(schedule: Schedule, steps: int, spacing: str = "linspace") -> np.ndarray:
    """``steps`` strictly descending integer timesteps from N-1 to 0 (both included).

    ``linspace``: evenly spaced in t (DDPM's full chain). ``logsnr`` [ours, default for DDIM and
    DPM-Solver++]: evenly spaced in log-SNR, rounded to the nearest integer t. Evenly spaced t
    leaves few steps at low noise, where data of small spread is decided (DDIM-50: -22% std for
    s=0.1), and gives DPM-Solver++'s multistep extrapolation step ratios of ~1:6 near t=0
    (+25% std at 20 steps); evenly spaced log-SNR fixes both (tests/diffusion/test_samplers.py).
    """
    n = schedule.num_train_timesteps
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= n:
        raise ValueError(f"steps must be an integer in [1, num_train_timesteps={n}], got {steps!r}")
    if spacing == "linspace":
        return np.round(np.linspace(n - 1, 0, steps)).astype(np.int32)
    if spacing != "logsnr":
        raise ValueError(
            f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}"
        )
    a = schedule.alphas_cumprod
    lam = 0.5 * (np.log(a) - np.log1p(-a))  # decreasing in t
    target = np.linspace(lam[-1], lam[0], steps)
    ts = np.array([int(np.argmin(np.abs(lam - v))) for v in target])
    ts[0], ts[-1] = n - 1, 0
    for i in range(steps - 2, -1, -1):  # strictly decreasing: push up from the end,
        ts[i] = max(ts[i], ts[i + 1] + 1)
    ts[0] = n - 1
    for i in range(1, steps):  # then down from the start (stays >= 0 since steps <= N)
        ts[i] = min(ts[i], ts[i - 1] - 1)
    return ts.astype(np.int32)


def _pairs(schedule: Schedule, ts: np.ndarray):
    """abar at each step and at the next one; after the last step abar = 1 (clean data)."""
    a = schedule.alphas_cumprod[ts]
    a_next = np.append(a[1:], 1.0)
    return a, a_next


def _table(a, **cols) -> np.ndarray:
    """Rows [sqrt(abar_t), sqrt(1 - abar_t), A, B, C, D, sigma] per step."""
    zero = np.zeros_like(a)
    order = ("A", "B", "C", "D", "sigma")
    return np.stack([np.sqrt(a), np.sqrt(1 - a)] + [cols.get(k, zero) for k in order], axis=1)


def ddpm_table(schedule: Schedule, ts: np.ndarray) -> np.ndarray:
    """Ancestral step from the posterior q(x_prev | x_t, x0) with sigma_t = sqrt(beta_tilde_t).

    On a subsequence of timesteps, beta' = 1 - abar_t / abar_prev (respaced DDPM); with all N
    steps this is Ho et al.'s sampler, the paper's (with the square root the paper's text omits).
    """
    a, ap = _pairs(schedule, ts)
    alpha = a / ap
    beta = 1 - alpha
    return _table(a, A=np.sqrt(alpha) * (1 - ap) / (1 - a), B=np.sqrt(ap) * beta / (1 - a),
                  sigma=np.sqrt(beta * (1 - ap) / (1 - a)))


def ddim_table(schedule: Schedule, ts: np.ndarray, eta: float = 0.0) -> np.ndarray:
    """DDIM (Song et al.): eta = 0 deterministic, eta = 1 the ancestral variance."""
    a, ap = _pairs(schedule, ts)
    sigma = eta * np.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
    return _table(a, B=np.sqrt(ap), C=np.sqrt(np.maximum(1 - ap - sigma ** 2, 0.0)), sigma=sigma)


def dpm_solver_pp_2m_table(schedule: Schedule, ts: np.ndarray) -> np.ndarray:
    """DPM-Solver++(2M) (Lu et al.), data prediction, multistep; first order on the first step and
    on the last one (to abar = 1, where log-SNR is infinite and the update is x = x0)."""
    a, ap = _pairs(schedule, ts)
    n = len(ts)
    lam = 0.5 * (np.log(a) - np.log1p(-a))
    A, B, D = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        if i == n - 1:  # to clean data
            B[i] = 1.0
            continue
        h = lam[i + 1] - lam[i]
        A[i] = np.sqrt((1 - ap[i]) / (1 - a[i]))
        c = -np.sqrt(ap[i]) * np.expm1(-h)
        if i == 0:
            B[i] = c
        else:
            r = (lam[i] - lam[i - 1]) / h
            B[i], D[i] = c * (1 + 1 / (2 * r)), -c / (2 * r)
    return _table(a, A=A, B=B, D=D)


def _bcast(m, x):
    return m.reshape(m.shape + (1,) * (x.ndim - m.ndim))


def _with_null(value, null):
    """``value`` and ``null`` (broadcast to it) concatenated along the batch, leaf by leaf."""
    return jax.tree.map(
        lambda v, n: jnp.concatenate([v, jnp.broadcast_to(n, v.shape).astype(v.dtype)]), value, null
    )


def _loop(model_fn, prediction_type, stochastic, t_ndim, given_t,
          x, table, ts, keys, cond, null_cond, guidance_scale, given, mask):
    """The scan over all steps (jitted below with the Python-level arguments static)."""
    known = None if mask is None else _bcast(mask.astype(bool), x)
    impose = (
        (lambda y: y) if known is None else (lambda y: jnp.where(known, given.astype(y.dtype), y))
    )
    # [cond; null] along the batch, built once here: it is the same at every step.
    both = None if null_cond is None else {k: _with_null(v, null_cond.get(k, v))
                                           for k, v in cond.items()}

    def model(x_in, t):
        if null_cond is None:
            return model_fn(x_in, t, **cond)
        out = model_fn(jnp.concatenate([x_in, x_in]), jnp.concatenate([t, t]), **both)
        c, u = jnp.split(out, 2)
        # c + (g - 1)(c - u) == u + g (c - u), and is exactly c when g == 1.
        return c + (guidance_scale - 1) * (c - u)

    def body(carry, step):
        x_t, x0_prev = carry
        t, coef, key = step
        x_t = impose(x_t)
        t_arr = jnp.full(x_t.shape[:t_ndim], t, jnp.int32)
        if given_t is not None:
            t_arr = jnp.where(mask.astype(bool), jnp.int32(given_t), t_arr)
        out = model(x_t, t_arr).astype(x_t.dtype)
        x0, eps = split_prediction(prediction_type, x_t, out, coef[0], coef[1])
        x_next = coef[2] * x_t + coef[3] * x0 + coef[4] * eps + coef[5] * x0_prev
        if stochastic:
            x_next = x_next + coef[6] * jax.random.normal(key, x_t.shape, x_t.dtype)
        return (impose(x_next), x0), None

    (x, _), _ = jax.lax.scan(body, (impose(x), jnp.zeros_like(x)), (ts, table, keys))
    return impose(x)


_jitted_loop = jax.jit(_loop, static_argnums=(0, 1, 2, 3, 4))

DEFAULT_SPACING = {"ddpm": "linspace", "ddim": "logsnr", "dpm++2m": "logsnr"}
DEFAULT_STEPS = 50  # model calls of DDIM and DPM-Solver++ when no number is given


def default_steps(name: str, schedule: Schedule) -> int:
    """Steps when none are given: DDPM's whole chain (the paper's sampler), else DEFAULT_STEPS."""
    return schedule.num_train_timesteps if name == "ddpm" else DEFAULT_STEPS


def _check_sampler(name: str, eta) -> None:
    if name not in TABLES:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(TABLES)}")
    if eta != 0.0 and name != "ddim":
        raise ValueError(f"eta is a DDIM setting; sampler {name!r} does not take it")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The sampler settings of a generation call; hashable, so they can key a compiled program."""
    name: str = "ddim"
    steps: Optional[int] = None
    guidance_scale: float = 1.0
    eta: float = 0.0
    spacing: Optional[str] = None

    def check(self, schedule: Schedule) -> None:
        """Fails before any compile on what :func:`sample` would reject inside a trace."""
        _check_sampler(self.name, self.eta)
        steps = default_steps(self.name, schedule) if self.steps is None else self.steps
        timesteps(schedule, steps, self.spacing or DEFAULT_SPACING[self.name])

    def keywords(self) -> dict:
        """The keyword arguments the generation schemes take (dod/engine.run, ...)."""
        return dict(sampler=self.name, steps=self.steps, guidance_scale=self.guidance_scale,
                    eta=self.eta, spacing=self.spacing)

TABLES: dict[str, Callable[..., np.ndarray]] = {
    "ddpm": ddpm_table,
    "ddim": ddim_table,
    "dpm++2m": dpm_solver_pp_2m_table,
}


def _check(shape, cond, null_cond, given, mask, given_t, t_ndim):
    if not shape:
        raise ValueError("shape must have at least a batch dimension")
    for k, value in cond.items():  # an entry may be an array or a pytree of them
        for v in jax.tree.leaves(value):
            if jnp.ndim(v) == 0 or jnp.shape(v)[0] != shape[0]:
                raise ValueError(f"cond[{k!r}] has shape {jnp.shape(v)}; its leading (batch) dim "
                                 f"must equal x's batch {shape[0]} (x shape {tuple(shape)})")
    if null_cond is not None:
        extra = sorted(set(null_cond) - set(cond))
        if extra:
            raise ValueError(
                f"null_cond has keys {extra} that cond lacks; cond keys: {sorted(cond)}"
            )
        for k, v in null_cond.items():
            try:
                jax.tree.map(
                    lambda n, c: np.broadcast_shapes(jnp.shape(n), jnp.shape(c)), v, cond[k]
                )
            except ValueError:
                raise ValueError(f"null_cond[{k!r}] does not broadcast to cond[{k!r}]: shapes "
                                 f"{jax.tree.map(jnp.shape, v)} and "
                                 f"{jax.tree.map(jnp.shape, cond[k])}") from None
    if (given is None) != (mask is None):
        raise ValueError("given frames need both `given` (clean latents) and `mask` (1 = given)")
    if mask is not None:
        if tuple(given.shape) != tuple(shape):
            raise ValueError(f"given has shape {tuple(given.shape)} but x has shape {tuple(shape)}")
        if mask.ndim > len(shape) or tuple(mask.shape) != tuple(shape[:mask.ndim]):
            raise ValueError(f"mask of shape {tuple(mask.shape)} must prefix x's shape "
                             f"{tuple(shape)} (e.g. [B, F] for x [B, F, h, w, c])")
    if given_t is not None:
        if mask is None:
            raise ValueError("given_t needs a mask: it is the t shown to the model at given frames")
        if t_ndim != mask.ndim:
            raise ValueError(f"given_t needs per-frame t: t_ndim ({t_ndim}) must equal mask.ndim "
                             f"({mask.ndim})")
    if not 1 <= t_ndim <= len(shape):
        raise ValueError(f"t_ndim must be in [1, {len(shape)}] for x of shape {tuple(shape)}")


def sample(name: str, model_fn: Callable[..., Any], schedule: Schedule, key, shape,
           *, steps: Optional[int] = None, cond: Optional[Mapping[str, Any]] = None,
           null_cond: Optional[Mapping[str, Any]] = None, guidance_scale: float = 1.0,
           given=None, mask=None, given_t: Optional[int] = None, t_ndim: Optional[int] = None,
           eta: float = 0.0, spacing: Optional[str] = None, x_T=None,
           dtype=jnp.float32):
    """Draws samples of ``shape`` with sampler ``name`` ('ddpm' | 'ddim' | 'dpm++2m').

    steps: number of model calls (default: :func:`default_steps`).
    cond / null_cond: keyword arrays for ``model_fn`` (batch first); with ``null_cond`` and
      ``guidance_scale != 1`` each step is ONE model call on [cond; null] concatenated along the
      batch, and eps = eps_u + g (eps_c - eps_u). Entries of ``null_cond`` broadcast to ``cond``'s
      shapes; keys it lacks (visual condition, mask) are shared by both halves.
    given / mask: clean latents and a ``[B, F]`` (prefix of ``shape``) mask of known frames.
    given_t: t shown to the model at given frames (per-frame t, needs t_ndim == mask.ndim).
    x_T: starting noise (default: N(0, I) from ``key``). eta: DDIM only.
    spacing: 'linspace' | 'logsnr' timestep grid (default per sampler, see DEFAULT_SPACING).
    """
    _check_sampler(name, eta)
    shape = tuple(shape)
    cond = dict(cond or {})
    mask = None if mask is None else jnp.asarray(mask)
    t_ndim = (
        (mask.ndim if given_t is not None and mask is not None else 1) if t_ndim is None else t_ndim
    )
    _check(shape, cond, null_cond, given, mask, given_t, t_ndim)
    steps = default_steps(name, schedule) if steps is None else steps
    ts = timesteps(schedule, steps, spacing or DEFAULT_SPACING[name])
    table = TABLES[name](schedule, ts, eta) if name == "ddim" else TABLES[name](schedule, ts)
    stochastic = bool(np.any(table[:, 6] > 0))
    k_init, k_steps = jax.random.split(key)
    if x_T is None:
        x_T = jax.random.normal(k_init, shape, dtype)
    elif tuple(x_T.shape) != shape:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape is {shape}")
    if isinstance(guidance_scale, (int, float)) and guidance_scale == 1.0:
        null_cond = None  # the conditional model exactly, at half the cost
    null_cond = None if null_cond is None else dict(null_cond)
    return _jitted_loop(model_fn, schedule.prediction_type, stochastic, t_ndim, given_t,
                        jnp.asarray(x_T, dtype), jnp.asarray(table, dtype), jnp.asarray(ts),
                        jax.random.split(k_steps, len(ts)), cond, null_cond,
                        jnp.asarray(guidance_scale, dtype), given, mask)


def config_kwargs(c: Any, *, sampler: Optional[str] = None, steps: Optional[int] = None,
                  guidance_scale: Optional[float] = None, eta: Optional[float] = None) -> dict:
    """``sample`` keyword arguments (name, steps, guidance_scale, eta) from a ``diffusion`` config
    block, each overridden where given: the one place a call's sampler settings are resolved
    (the pipeline, the generate command, the main job's video and the benchmarks come here).
    ``steps`` 0 or None and ``sampler`` "" or None mean the config's; ``eta`` defaults to the
    block's ``ddim_eta`` for DDIM and is left out for the other samplers."""
    name = sampler or c.sampler
    kw = dict(name=name, steps=steps or c.sample_steps,
              guidance_scale=c.guidance_scale if guidance_scale is None else guidance_scale)
    if eta is not None:
        kw["eta"] = eta
    elif name == "ddim":
        kw["eta"] = c.ddim_eta
    return kw
