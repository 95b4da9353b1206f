"""The config of Hydra launcher `slurm` (hydra/launcher=slurm), registered in Hydra's ConfigStore: every key of
hydra-submitit-launcher's submitit_slurm (partition, timeout_min, cpus_per_task, gpus_per_node, mem_gb,
array_parallelism, setup ...), and one of its own."""
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

try:
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
except ImportError:  # no cluster extra: hydra/launcher=slurm stays unregistered, and says what to install (src.launchers.missing)
    SlurmQueueConf = None

if SlurmQueueConf is not None:
    @dataclass
    class SlurmLauncherConf(SlurmQueueConf):
        # The class Hydra builds.
        _target_: str = "hydra_plugins.slurm_launcher.slurm_launcher.SlurmLauncher"
        # Seconds a task may be out of SLURM's queue with no result before it counts as lost (a shared file system
        # can show a finished task's result late). The queue is asked every 5 s.
        lost_after_s: int = 60

    ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=SlurmLauncherConf, provider="mlp-sweep")
