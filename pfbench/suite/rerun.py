"""The rerun guard: a run into a results folder never mixes two instances of one model silently.

A model trained in the suite is identified by its weights (``pfbench.suite.identity``). When ``pfbench run`` is
about to train a model (no finished checkpoint under ``runs/``) while the results folder already holds rows of
the same recipe (``pfbench.report.keys.RECIPE_KEYS``: model name, training timestep sampler, decoder) made by
other weights (e.g. the committed results, from a checkpoint that is not on this machine), the new weights
would add a second instance of the model beside the first. The run stops before training and says how to
compare instead; ``--new-instance`` keeps both (the report then lists the instances separately and says so,
``pfbench.report.keys.instance_warning``).
"""

from __future__ import annotations

from pathlib import Path

from pfbench import PfbenchError
from pfbench.report.keys import RECIPE_KEYS, recipe_ids
from pfbench.results import read_results
from pfbench.suite.models import SuiteModels
from pfbench.train.spec import spec_from_dict


def check_rerun(models: SuiteModels, results: Path) -> None:
    """Stops a run that would train a model whose recipe already has results (under other weights) in ``results``.

    Raises:
        PfbenchError: one line naming the model, the ids already there and the two ways on.
    """
    todo = [n for n, m in models.spec.models.items() if m.train is not None and models.identity(n).weights is None]
    if not todo or not results.is_dir() or not any(results.glob("*.parquet")):
        return
    held = recipe_ids(read_results(results, models.spec.name))
    at = {k: RECIPE_KEYS.index(k) for k in ("model", "train_timesteps", "decoder")}
    for name in todo:
        model = models.spec.models[name]
        ts = spec_from_dict(model.train or {}).to_dict().get("timesteps")
        ts_name = str(ts.get("name", "")) if isinstance(ts, dict) else str(ts or "")
        try:
            decoder = models.decoder_id(model) or ""
        except PfbenchError:
            decoder = None  # its decoder file is not here: match on name and timesteps
        ids = sorted({i for recipe, got in held.items() for i in got
                      if recipe[at["model"]] == name and recipe[at["train_timesteps"]] in ("", ts_name)
                      and decoder in (None, recipe[at["decoder"]])})
        if ids:
            raise PfbenchError(
                f"models.{name}: {results} holds results of this model under model id {', '.join(i[:12] for i in ids)}, "
                f"and training it here may make another instance; run into another folder with --results NEW and "
                f"check with `pfbench compare {results} NEW/{models.spec.name}`, or pass --new-instance to keep both")
