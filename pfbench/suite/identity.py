"""One identity per unit of work, built in one place and read by plan, run, launch, units and scoring.

A cell's identity is everything that changes its numbers: the model's content id (the weights by content, plus
a latent model's decoder and a text-to-image model's text encoder and prompts), the sampler and its parameters,
the NFE budget or step count, CFG scale and interval, seed and sample count (``RunSpec.key``), the sampling
numerics (``EvalSpec.numerics``) and how the images are scored (``Scorer.key``: metrics, reference set, metric
options). ``CellIdentity.part`` is the result part (file stem) of the cell; ``CellIdentity.job_key`` is what the
cluster launcher registers its job under, the same before and after the model is trained.

The code revision (git sha) is recorded as provenance (``CellIdentity.revision``; every row carries it as
``git_sha``) but is deliberately not in any key: a key that held it would invalidate every result at every
commit. A change of code that changes numbers is keyed where it happens instead (e.g. a sampler's
``revision``).

The model units (reference rows, learning curves, diagnostics, training speed and cost) are keyed here too, by
what changes each of them, so a change of weights, an eval option or the reference set makes new parts for
exactly the units it affects.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pfbench import PfbenchError
from pfbench.io import content_hash
from pfbench.suite.scoring import Scorer
from pfbench.suite.spec import RunSpec, SuiteSpec


@dataclass(frozen=True)
class ModelIdentity:
    """What identifies the pixels a suite model makes.

    Attributes:
        name: the suite's name of the model (``pf``, ``pf@s1``).
        weights: content id of the weights it loads (sha256 of a checkpoint file, of a trained model's weights,
            or of a plugin's name, params and the files they name); None while a suite-trained model is untrained.
        recipe: a suite-trained model's run folder name (``<model>-<hash of the training spec>``), known before
            training; None for a given model.
        decoder: a latent model's ``"<vae>@<sha256[:16]>"``. text: a text-to-image model's ``"text:<hash>"`` of
            its encoder and the suite's prompts.
    """

    name: str
    weights: str | None
    recipe: str | None = None
    decoder: str | None = None
    text: str | None = None

    @property
    def key_id(self) -> str | None:
        """The model's part of every cell key: weights, then ``+decoder`` and ``+text`` when present."""
        if self.weights is None:
            return None
        out = self.weights if self.decoder is None else f"{self.weights}+{self.decoder}"
        return out if self.text is None else f"{out}+{self.text}"

    def ref(self) -> str:
        """What names the model in launcher job keys, the same before and after training: its recipe's run
        folder for a suite-trained model, else its content id."""
        if self.recipe is not None:
            return f"recipe:{self.recipe}"
        return self.key_id or self.name


@dataclass(frozen=True)
class CellIdentity:
    """The identity of one cell (see the module docstring); built by ``SuiteIdentity.cell`` only."""

    cell: RunSpec
    model: ModelIdentity
    numerics: str  # EvalSpec.numerics(): "" for fp32 uncompiled
    scores: str  # Scorer.key()

    def key(self) -> str:
        """The cell's content hash (model content id + numerics, with the cell's own fields).

        Raises:
            PfbenchError: the model has no content id yet (a suite model not trained).
        """
        if self.model.key_id is None:
            raise PfbenchError(f"model {self.model.name} has no id yet (not trained): its cells have no key")
        return self.cell.key(self.model.key_id + self.numerics)

    def part(self) -> str:
        """The cell's result part (``results/<suite>/<part>.parquet``)."""
        return f"cell-{self.key()}-{self.scores}"

    def job_key(self) -> str:
        """The launcher registry key of the cell's job (``ModelIdentity.ref`` in place of the content id)."""
        return f"cell-{self.cell.key(self.model.ref() + self.numerics)}"

    @property
    def revision(self) -> str | None:
        """The code revision that computes the cell: provenance, not part of any key."""
        return code_revision()


@functools.cache
def code_revision() -> str | None:
    """The git sha rows record (``pfbench.results.provenance``); None outside a git checkout."""
    from pfbench.results import provenance

    sha = provenance()["git_sha"]
    return None if sha is None else str(sha)


class SuiteIdentity:
    """Builds the identities of one suite's units: cells, reference rows, and each model's units.

    Args:
        spec: The suite.
        scorer: How it scores images (``Scorer.key`` enters every scored unit's key).
    """

    def __init__(self, spec: SuiteSpec, scorer: Scorer | None = None) -> None:
        self.spec = spec
        self.scorer = scorer or Scorer(spec)

    def cell(self, cell: RunSpec, model: ModelIdentity | str) -> CellIdentity:
        """A cell's identity; ``model`` may be a model's ``key_id`` string (a model known only by it)."""
        if isinstance(model, str):
            model = ModelIdentity(cell.model, model)
        return CellIdentity(cell, model, self.spec.eval.numerics(), self.scorer.key())

    def reference_part(self, captions: bool) -> str:
        """The embedded reference rows: keyed like a cell's scores (``Scorer.key``: metrics, data, reference set,
        resize, weights, metric options) plus the sample count and whether captions are scored."""
        keyed: list[object] = [self.spec.data.key(), self.spec.metrics, self.spec.sweep.num_samples,
                               self.scorer.key()]
        return f"reference-{content_hash(keyed + (['captions'] if captions else []))}"

    def curve_part(self, model_id: str, step: int) -> str:
        """A learning-curve point: the weights, the step, the scoring and the numerics."""
        return f"curve-{model_id[:16]}-{step}-{self.scorer.key()}{self.spec.eval.numerics()}"

    def difficulty_part(self, model_id: str) -> str:
        """The difficulty diagnostic: the weights, the held-out data and the time."""
        data = self.spec.data.key()
        return f"difficulty-{model_id[:16]}-{content_hash([data, self.spec.eval.difficulty_t])[:8]}"

    def validity_part(self, model_id: str) -> str:
        """Per-patch correlations and the context curve: the weights, their times and the held-out data."""
        ev = self.spec.eval
        return (f"validity-{model_id[:16]}-"
                f"{content_hash([ev.difficulty_ts, ev.context_ts, self.spec.data.key()])[:8]}")

    @staticmethod
    def train_speed_part(model_id: str) -> str:
        return f"train-{model_id[:16]}"

    @staticmethod
    def train_cost_part(model_id: str) -> str:
        return f"traincost-{model_id[:16]}"
