"""Built-in plugin table: names → lazy "module:attr" targets (imports nothing heavy)."""

from __future__ import annotations

from pfbench.registry import ADAPTERS, METRICS, NETS, SAMPLERS, TIMESTEPS

# --- training timestep samplers (SPEC §3) ---
# (timesteps section)
TIMESTEPS.add("global_uniform", "pfbench.train.timesteps:GlobalUniform")
TIMESTEPS.add("global_logit_normal", "pfbench.train.timesteps:GlobalLogitNormal")
TIMESTEPS.add("patch_uniform", "pfbench.train.timesteps:PatchUniform")
TIMESTEPS.add("srm", "pfbench.train.timesteps:SRM")
TIMESTEPS.add("gaussian", "pfbench.train.timesteps:Gaussian")
TIMESTEPS.add("truncated_gaussian", "pfbench.train.timesteps:TruncatedGaussian")
TIMESTEPS.add("ltg", "pfbench.train.timesteps:LTG")

# --- sampling algorithms (SPEC §5) ---
# (samplers section)
SAMPLERS.add("euler", "pfbench.samplers.euler:Euler")
SAMPLERS.add("euler_pf", "pfbench.samplers.euler_pf:EulerPF")
SAMPLERS.add("heun", "pfbench.samplers.heun:Heun")
SAMPLERS.add("euler_maruyama", "pfbench.samplers.euler_maruyama:EulerMaruyama")
SAMPLERS.add("dual_loop", "pfbench.samplers.dual_loop:DualLoop")
SAMPLERS.add("dual_loop_random", "pfbench.samplers.dual_loop_random:DualLoopRandom")
SAMPLERS.add("look_ahead", "pfbench.samplers.look_ahead:LookAhead")
SAMPLERS.add("look_ahead_random", "pfbench.samplers.look_ahead_random:LookAheadRandom")

# --- model adapters ---
# (adapters section)
ADAPTERS.add("cfg", "pfbench.adapters.cfg:CFG")
ADAPTERS.add("dit", "pfbench.adapters.dit:DiTAdapter")
ADAPTERS.add("external", "pfbench.adapters.external:external_adapter")

# --- metrics (SPEC §6) ---
# (metrics section)
METRICS.add("fd_embedded", "pfbench.metrics.embedded:FDEmbedded")
METRICS.add("is_embedded", "pfbench.metrics.embedded:ISEmbedded")
METRICS.add("class_acc", "pfbench.metrics.embedded:ClassAccuracy")
METRICS.add("pr_embedded", "pfbench.metrics.embedded:PREmbedded")
METRICS.add("fid", "pfbench.metrics.standard:FID")
METRICS.add("sfid", "pfbench.metrics.standard:SFID")
METRICS.add("is", "pfbench.metrics.standard:InceptionScore")
METRICS.add("pr", "pfbench.metrics.standard:PrecisionRecall")
METRICS.add("kid", "pfbench.metrics.standard:KID")
METRICS.add("clip_score", "pfbench.metrics.clipscore:CLIPScore")
METRICS.add("clip_embedded", "pfbench.encoders.tiny_clip:CLIPEmbedded")
METRICS.add("fd_dinov2", "pfbench.encoders.dinov2:FDDINOv2")

__all__ = ["ADAPTERS", "METRICS", "NETS", "SAMPLERS", "TIMESTEPS"]
