"""The configs of Hydra launchers `fused_slurm` and `fused_submitit_local`, registered in Hydra's ConfigStore: every
key of hydra-submitit-launcher's submitit_slurm (partition, timeout_min, cpus_per_task, gpus_per_node, mem_gb,
array_parallelism, setup ...) or submitit_local, each for one fused group's cluster job; `fused_slurm` adds the
bounded wait of hydra/launcher=slurm."""
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

try:
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
except ImportError:  # no cluster extra: neither is registered, and each says what to install (src.launchers.missing)
    LocalQueueConf = SlurmQueueConf = None

if SlurmQueueConf is not None:
    @dataclass
    class FusedSlurmLauncherConf(SlurmQueueConf):
        # The class Hydra builds.
        _target_: str = "hydra_plugins.fused_cluster_launcher.fused_cluster_launcher.FusedSlurmLauncher"
        # Seconds a cluster job may be out of SLURM's queue with no result before its jobs count as lost (as for
        # hydra/launcher=slurm). The queue is asked every 5 s.
        lost_after_s: int = 60

    @dataclass
    class FusedLocalLauncherConf(LocalQueueConf):
        # The class Hydra builds. Each group runs as a process of submitit's local executor: all at once.
        _target_: str = "hydra_plugins.fused_cluster_launcher.fused_cluster_launcher.FusedLocalLauncher"

    ConfigStore.instance().store(group="hydra/launcher", name="fused_slurm", node=FusedSlurmLauncherConf, provider="mlp-sweep")
    ConfigStore.instance().store(group="hydra/launcher", name="fused_submitit_local", node=FusedLocalLauncherConf, provider="mlp-sweep")
