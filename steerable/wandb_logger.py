"""The W&B logger of ``logger=wandb`` (``conf/logger/wandb.yaml``).

Lightning's ``WandbLogger`` always hands ``anonymous=None`` to ``wandb.init``, and wandb warns on every
run that the setting has no effect. :class:`WandbLogger` passes ``anonymous`` only when it is set.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger`` (same arguments) that leaves ``anonymous`` out of ``wandb.init``
    unless it is given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kwargs.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
