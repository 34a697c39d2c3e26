"""A trained NUWA-XL model family: its on-disk format (:mod:`.store`) and its runtime
(:mod:`.runtime`). Training writes it; generation, the latent cache and benchmarks read it. This
package imports neither ``train`` nor ``data``."""
from nuwa_xl_jax.family.runtime import MTDModels
from nuwa_xl_jax.family.store import (
                                      ExportError,
                                      export_dir,
                                      has_export,
                                      load_config,
                                      read_export,
                                      read_vae,
                                      write_export,
)

__all__ = ["ExportError", "MTDModels", "export_dir", "has_export", "load_config", "read_export",
           "read_vae", "write_export"]
