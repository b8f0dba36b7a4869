"""Built-in plugin table: kind → name → lazy "module:attr" target (plain data; imports nothing).

The registry (``pfbench.registry``) reads this table; third-party packages add names through the
entry-point groups ``pfbench.adapters``, ``pfbench.samplers``, ``pfbench.metrics``, ``pfbench.features``,
``pfbench.timesteps`` and ``pfbench.text_encoders``.
"""

from __future__ import annotations

BUILTINS: dict[str, dict[str, str]] = {
    "timesteps": {
        "global_uniform": "pfbench.train.timesteps:GlobalUniform",
        "global_logit_normal": "pfbench.train.timesteps:GlobalLogitNormal",
        "patch_uniform": "pfbench.train.timesteps:PatchUniform",
        "srm": "pfbench.train.timesteps:SRM",
        "gaussian": "pfbench.train.timesteps:Gaussian",
        "truncated_gaussian": "pfbench.train.timesteps:TruncatedGaussian",
        "ltg": "pfbench.train.timesteps:LTG",
    },
    "samplers": {
        "euler": "pfbench.samplers.euler:Euler",
        "euler_pf": "pfbench.samplers.euler_pf:EulerPF",
        "heun": "pfbench.samplers.heun:Heun",
        "euler_maruyama": "pfbench.samplers.euler_maruyama:EulerMaruyama",
        "dual_loop": "pfbench.samplers.dual_loop:DualLoop",
        "dual_loop_random": "pfbench.samplers.dual_loop_random:DualLoopRandom",
        "look_ahead": "pfbench.samplers.look_ahead:LookAhead",
        "look_ahead_random": "pfbench.samplers.look_ahead_random:LookAheadRandom",
    },
    "adapters": {
        "cfg": "pfbench.adapters.cfg:CFG",
        "dit": "pfbench.adapters.dit:DiTAdapter",
        "external": "pfbench.adapters.external:external_adapter",
        "t2i": "pfbench.adapters.t2i:t2i_adapter",
    },
    "metrics": {
        "fd_embedded": "pfbench.metrics.embedded:FDEmbedded",
        "is_embedded": "pfbench.metrics.embedded:ISEmbedded",
        "class_acc": "pfbench.metrics.embedded:ClassAccuracy",
        "pr_embedded": "pfbench.metrics.embedded:PREmbedded",
        "fid": "pfbench.metrics.standard:FID",
        "sfid": "pfbench.metrics.standard:SFID",
        "is": "pfbench.metrics.standard:InceptionScore",
        "pr": "pfbench.metrics.standard:PrecisionRecall",
        "kid": "pfbench.metrics.standard:KID",
        "clip_score": "pfbench.metrics.clipscore:CLIPScore",
        "clip_embedded": "pfbench.metrics.clipscore:CLIPEmbedded",
        "fd_dinov2": "pfbench.metrics.dinov2:FDDINOv2",
        "attr_acc": "pfbench.metrics.t2i:AttrAccuracy",
    },
    # feature networks metrics read (Metric.features): builders (FeatureContext) -> FeatureExtractor
    "features": {
        "images": "pfbench.encoders.base:identity",
        "inception": "pfbench.encoders.inception:from_context",
        "embedded": "pfbench.encoders.embedded:from_context",
        "dinov2": "pfbench.encoders.dinov2:from_context",
        "clip": "pfbench.encoders.clip:from_context",
        "tiny_clip": "pfbench.encoders.tiny_clip:from_context",
        "embedded_attrs": "pfbench.encoders.attributes:from_context",
    },
    # text encoders of text-to-image models (pfbench.encoders.text.TextEncoder): loaders (device, weights) -> encoder
    "text_encoders": {
        "tiny_text": "pfbench.encoders.tiny_text:load",
        "clip_l14": "pfbench.encoders.text_external:clip_l14",
        "clip_b32": "pfbench.encoders.text_external:clip_b32",
        "t5": "pfbench.encoders.text_external:t5",
        "qwen": "pfbench.encoders.text_external:qwen",
        "hf": "pfbench.encoders.text_external:hf",
    },
}

__all__ = ["BUILTINS"]
