"""Built-in plugin table: names → lazy "module:attr" targets (imports nothing heavy)."""

from __future__ import annotations

from pfbench.registry import ADAPTERS, METRICS, NETS, SAMPLERS, TIMESTEPS

# --- training timestep samplers (SPEC §3) ---
# (timesteps section)
TIMESTEPS.add("global_uniform", "pfbench.timesteps:GlobalUniform")
TIMESTEPS.add("global_logit_normal", "pfbench.timesteps:GlobalLogitNormal")
TIMESTEPS.add("patch_uniform", "pfbench.timesteps:PatchUniform")
TIMESTEPS.add("srm", "pfbench.timesteps:SRM")
TIMESTEPS.add("gaussian", "pfbench.timesteps:Gaussian")
TIMESTEPS.add("truncated_gaussian", "pfbench.timesteps:TruncatedGaussian")
TIMESTEPS.add("ltg", "pfbench.timesteps:LTG")

# --- sampling algorithms (SPEC §5) ---
# (samplers section)

# --- model adapters ---
# (adapters section)

# --- metrics (SPEC §6) ---
# (metrics section)

__all__ = ["ADAPTERS", "METRICS", "NETS", "SAMPLERS", "TIMESTEPS"]
