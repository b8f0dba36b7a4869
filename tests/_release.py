"""Released-format checkpoints for tests and the GPU rehearsal: a pfbench DiT written with the key names and
file layout of the DiT/SiT/PatchForcingDiT codebases (written independently from their key names).

A plain helper module (like ``_text_stub``), shared by ``conftest.py``, ``test_adapters_external.py``,
``test_imagenet_rehearsal.py`` and ``benchmarks/rehearsal.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PF_TARGET = "patch_flow.models.pf_transformer.PatchForcingDiT"


def to_external(net: Any, sigma: bool, pos: Any = None) -> dict[str, Any]:
    """Inverse of the adapter, written independently from the DiT/SiT/PatchForcingDiT key names."""
    import torch

    cfg = net.cfg
    sd = net.state_dict()
    ext: dict[str, Any] = {
        "x_embedder.proj.weight": sd["patch_embed.weight"],
        "x_embedder.proj.bias": sd["patch_embed.bias"],
        "pos_embed": net.get_buffer("pos").clone() if pos is None else pos,
        "y_embedder.embedding_table.weight": sd["cond.y_table.weight"],
    }
    for i in (0, 2):
        for leaf in ("weight", "bias"):
            ext[f"t_embedder.mlp.{i}.{leaf}"] = sd[f"cond.t_mlp.{i}.{leaf}"]
    names = {"qkv": "attn.qkv", "proj": "attn.proj", "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2", "ada.1": "adaLN_modulation.1"}
    for b in range(cfg.depth):
        for ours, theirs in names.items():
            for leaf in ("weight", "bias"):
                ext[f"blocks.{b}.{theirs}.{leaf}"] = sd[f"blocks.{b}.{ours}.{leaf}"]
    for leaf in ("weight", "bias"):
        ext[f"final_layer.adaLN_modulation.1.{leaf}"] = sd[f"final.ada.1.{leaf}"]
        w = sd[f"final.linear.{leaf}"]
        if sigma:  # learn_sigma: per patch position, C mean channels then C sigma channels
            pp, c = cfg.patch**2, cfg.in_channels
            rest = w.shape[1:]
            both = torch.cat([w.reshape(pp, c, *rest), torch.randn(pp, c, *rest)], dim=1)
            w = both.reshape(pp * 2 * c, *rest)
        ext[f"final_layer.linear.{leaf}"] = w
    return ext



def release_params(net: Any) -> dict[str, object]:
    """The reference model config's params for ``net``, under the reference's argument names."""
    cfg = net.cfg
    return {"in_channels": cfg.in_channels, "input_size": cfg.input_size, "depth": cfg.depth,
            "hidden_size": cfg.width, "patch_size": cfg.patch, "num_heads": cfg.heads,
            "num_classes": cfg.num_classes, "compile": True, "predict_uncertainty": True}


def write_release(path: Path, net: Any, target: str = PF_TARGET, config: object = None) -> Path:
    """Writes ``{"state_dict", "config"}`` exactly as the reference's scripts/convert_ckpt.py does.

    Its ``config`` is ``ckpt["hyper_parameters"]["model"]``: the ``model`` node of the trainer's OmegaConf
    params, so ``torch.save`` pickles a ``DictConfig`` together with the parent tree it hangs off.
    """
    import torch
    from omegaconf import OmegaConf

    if config is None:
        hparams = OmegaConf.create({"model": {"target": target, "params": release_params(net)}, "lr": 1e-4,
                                    "ema_rate": 0.9999, "lr_scheduler_cfg": None, "tags": [],
                                    "flow": {"target": "patch_flow.flow_pf.PatchFlowForcing",
                                             "params": {"patch_size": 2}}})
        config = hparams.model
    torch.save({"state_dict": to_external(net, sigma=False), "config": config}, path)
    return path
