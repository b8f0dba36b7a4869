"""The claims a validity report tests, declared in families (the unit of Holm's correction, ``correction``).

A claim says that one side beats another: a (model, sampler) pair of cells at equal NFE (``cell``) or at equal
outer steps (``steps``), a model's learning curve (``curve``) or one diagnostic of a model against another
(``diagnostic``). Model names are those of
``suites/validity.yaml`` (``pf`` = LTG, ``sit`` = the global-t baseline, ...). Tested by ``claims.evaluate_claims``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Side:
    """One side of a claim: a model (suite name, training seeds stripped) with a sampler and sampler variant
    (``""`` = defaults); for a diagnostic claim, ``sampler`` is the diagnostic's metric name. ``steps_x``
    (``steps`` claims): this side runs ``steps_x`` times the basis' N outer steps (euler_pf(2N))."""

    model: str
    sampler: str
    variant: str = ""
    steps_x: int = 1

    def text(self) -> str:
        return (f"{self.model} · {self.sampler}" + (f" {self.variant}" if self.variant else "")
                + (f" ({self.steps_x}N steps)" if self.steps_x != 1 else ""))


@dataclass(frozen=True)
class Claim:
    """``better`` beats ``worse``. ``kind``: ``cell`` (equal NFE and equal GFLOPs), ``steps`` (steps-mode cells at
    N outer steps, the worse side at ``worse.steps_x`` x N), ``curve`` (learning curves at equal training steps,
    FLOPs and wall-clock) or ``diagnostic`` (two diagnostic rows of one model)."""

    family: str
    name: str
    better: Side
    worse: Side
    paper: str = ""
    kind: str = "cell"


# The metric of the paper's numbers: FID over 10K samples, ImageNet 256², B/2 models (read from its figures).
PAPER_FID = "FID-10K (ImageNet B/2)"


def _c(family: str, name: str, better: tuple[str | int, ...], worse: tuple[str | int, ...], paper: str = "",
       kind: str = "cell", metric: str = PAPER_FID) -> Claim:
    """A claim; a ``paper`` text with numbers is prefixed by their ``metric`` (so a table names what they are)."""
    text = f"{metric}: {paper}" if paper and any(ch.isdigit() for ch in paper) else paper
    return Claim(family, name, Side(*better), Side(*worse), text, kind)  # type: ignore[arg-type]  # (model, sampler[, variant[, steps_x]])


# The basis of a trend claim starts with this ("slope per NFE doubling (NFE 8–32)"; claims.trend_claims).
TREND_BASIS = "slope per NFE doubling"

# The declared families: Holm's correction runs within each (pfbench.report.correction).
TRAIN, INFER, PF_SIT, DIAG = "training sampler", "inference sampler", "PF vs SiT", "difficulty"
STEPS = "equal steps"
PF, SIT, SIT_LN = ("pf", "euler_pf"), ("sit", "euler"), ("sit_ln", "euler")
LA, DL = ("pf", "look_ahead"), ("pf", "dual_loop")
# The paper's orderings (``PAPER_FID``), adjacent pairs of each chain.
PAPER_CLAIMS: tuple[Claim, ...] = (
    _c(TRAIN, "LTG < truncated Gaussian", PF, ("pf_tgauss", "euler_pf"), "31.4 < 34.7"),
    _c(TRAIN, "truncated Gaussian < SRM s=10", ("pf_tgauss", "euler_pf"), ("pf_srm10", "euler_pf"), "34.7 < 39.0"),
    _c(TRAIN, "SRM s=10 < SiT", ("pf_srm10", "euler_pf"), SIT, "39.0 < 41.1"),
    _c(TRAIN, "SiT < SRM s=1", SIT, ("pf_srm1", "euler_pf"), "41.1 < 42.0"),
    _c(TRAIN, "LTG < naive per-patch uniform", PF, ("pf_patch", "euler_pf"), "per-patch uniform hurts"),
    # The control of issue 20: SiT trained with logit-normal global t (the reference's own DiT baseline config).
    _c(TRAIN, "SiT logit-normal < SiT uniform", SIT_LN, SIT, "not in the paper (reference DiT config)"),
    _c(INFER, "look_ahead < dual_loop", ("pf", "look_ahead"), ("pf", "dual_loop"), "27.7 < 29.3"),
    _c(INFER, "dual_loop < euler_pf", ("pf", "dual_loop"), PF, "29.3 < 31.4"),
    _c(INFER, "euler_pf < look_ahead_random", PF, ("pf", "look_ahead_random"), "31.4 < 33.2"),
    _c(INFER, "euler_pf < dual_loop_random", PF, ("pf", "dual_loop_random"), "31.4 < random"),
    _c(INFER, "look_ahead < look_ahead_random", ("pf", "look_ahead"), ("pf", "look_ahead_random"), "27.7 < 33.2"),
    _c(INFER, "dual_loop < dual_loop_random", ("pf", "dual_loop"), ("pf", "dual_loop_random"), "29.3 < random"),
    _c(PF_SIT, "LTG < SiT (equal steps)", PF, SIT, "31.4 < 41.1"),
    _c(PF_SIT, "look_ahead_random < SiT euler", ("pf", "look_ahead_random"), SIT, "33.2 < SiT"),
    _c(PF_SIT, "look_ahead < SiT heun", ("pf", "look_ahead"), ("sit", "heun"), "best PF < best SiT"),
    _c(PF_SIT, "LTG < SiT trained for PF's FLOPs", PF, ("sit_flops", "euler"), "equal training FLOPs"),
    _c(PF_SIT, "LTG < SiT logit-normal (equal training steps)", PF, SIT_LN, "stronger baseline, not in the paper"),
    _c(PF_SIT, "LTG < SiT (learning curves)", PF, ("sit_flops", "euler"), "", kind="curve"),
    _c(DIAG, "corr(var, err) at t=0.6 > at t=0.2", ("*", "difficulty_pearson_patch_t0.6"),
       ("*", "difficulty_pearson_patch_t0.2"), "0.52 > 0.11", kind="diagnostic", metric="Pearson R (ImageNet)"),
    # Context at 0.65 (the middle of the grid 0.3 … 1): a gap LTG trains on; a clean context (t = 1) is rare under
    # LTG (t_max near 1 and a 0.7 fold below it), the figure shows the whole curve.
    _c(DIAG, "context helps: hard-patch loss, context at 0.65 < none", ("*", "context_loss_hard_t0.3_ctx0.65"),
       ("*", "context_loss_hard_t0.3_ctx0.3"), "context helps", kind="diagnostic"),
    # Equal outer steps (steps-mode cells, as the paper ran them: 100 steps for every sampler): "context per step"
    # apart from "half the steps at equal NFE" (look_ahead at N steps costs about 2N calls, as euler_pf at 2N).
    _c(STEPS, "look_ahead < euler_pf (equal steps)", LA, PF, "27.7 < 31.4", kind="steps"),
    _c(STEPS, "dual_loop < euler_pf (equal steps)", DL, PF, "29.3 < 31.4", kind="steps"),
    _c(STEPS, "look_ahead < dual_loop (equal steps)", LA, DL, "27.7 < 29.3", kind="steps"),
    _c(STEPS, "look_ahead(N) < euler_pf(2N) (about equal NFE)", LA, ("pf", "euler_pf", "", 2),
       "half the steps at equal NFE", kind="steps"),
)
# The headline comparisons (issue 20): their power (minimum detectable effect) is stated in the report.
HEADLINE = ("LTG < SiT (equal steps)", "LTG < SiT trained for PF's FLOPs", "LTG < SiT logit-normal (equal training steps)",
            "LTG < SiT (learning curves)", "look_ahead < dual_loop", "look_ahead < dual_loop (equal steps)")
