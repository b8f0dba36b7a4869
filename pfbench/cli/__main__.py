"""``python -m pfbench.cli`` (what ``torchrun ... -m pfbench.cli train ...`` runs): the ``pfbench`` command."""

from pfbench.cli import main

main()
