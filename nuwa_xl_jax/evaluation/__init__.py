"""The ``evaluate`` command's library: which videos (generated through the pipeline or read from
files), which reference (the synthetic world acting out the same storyboards, real videos, or a
cached statistics file), which feature networks (converted public weights, or random ones only
when asked), and the report (JSON + a markdown table). It sits above :mod:`nuwa_xl_jax.pipeline`
(it generates through it) and uses :mod:`nuwa_xl_jax.eval` for the networks and the metrics."""
