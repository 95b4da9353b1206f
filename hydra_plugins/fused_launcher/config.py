"""The config of Hydra launcher `fused` (hydra/launcher=fused, this project's default), registered in Hydra's ConfigStore."""
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class FusedLauncherConf:
    # The class Hydra builds. The launcher has no settings of its own: which jobs fuse, and on which engine, is the
    # app's `engine` key (auto | fused | gridsearch), and a group trains on the app's `device` (src.devices.fused_devices).
    _target_: str = "hydra_plugins.fused_launcher.fused_launcher.FusedLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="fused", node=FusedLauncherConf, provider="mlp-sweep")
