"""Optional experiment loggers (+logger=tensorboard, +logger=mlflow): skorch's own TensorBoard and
MlflowLogger callbacks, with one writer or run per fit.

GridSearchCV clones the estimator and its callbacks for every fit, so a writer or a run cannot be made
up front: each logger makes its own when its fit begins, named for the job and the fold. The fused
engine trains outside skorch; its fits replay their per-epoch history to these callbacks
(src.estimator.PretrainedNet), so both engines log the same curves.
"""
import importlib.util
import tempfile
from pathlib import Path

from skorch.callbacks import MlflowLogger, TensorBoard

LOGGERS = ("tensorboard", "mlflow")  # each is also the pip extra, and the package, it needs


def missing(name: str) -> str | None:
    """What to install for the logger `name` when its package is not installed here (None: it is)."""
    if importlib.util.find_spec(name) is None:
        return f"needs the {name} package: pip install \".[{name}]\""
    return None


class TensorBoardPerFit(TensorBoard):
    """skorch's TensorBoard callback writing each fit to <log_dir>/fold<k> (open: tensorboard --logdir <sweep folder>)."""

    replays_history = True

    def __init__(self, log_dir: str, writer=None, **kwargs):
        super().__init__(writer=writer, **kwargs)  # the writer is made when a fit begins
        self.log_dir = log_dir

    def on_train_begin(self, net, **kwargs):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(self.log_dir) / f"fold{getattr(net, 'fold_', None)}"))


class MlflowPerFit(MlflowLogger):
    """skorch's MlflowLogger logging each fit as its own MLflow run ("<job>/fold<k>") in `experiment`."""

    replays_history = True

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, **kwargs):
        super().__init__(**kwargs)
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name

    def initialize(self):
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)  # before skorch's MlflowLogger makes its client
        return super().initialize()

    def on_train_begin(self, net, **kwargs):
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:  # a local store keeps its artifacts beside it, not in the current folder
            local = self.tracking_uri.startswith("sqlite:///")
            where = (Path(self.tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri() if local else None
            experiment_id = client.create_experiment(self.experiment, artifact_location=where)
        else:
            experiment_id = experiment.experiment_id
        self.run = client.create_run(experiment_id, run_name=f"{self.run_name}/fold{getattr(net, 'fold_', None)}")
        self.client = client
        self.initialize()  # skorch's MlflowLogger takes its run and client here; it ends the run after training
        super().on_train_begin(net, **kwargs)

    def on_train_end(self, net, **kwargs):
        """skorch's artifacts are the net's params, optimizer, criterion and history. A fit the fused engine trained
        (src.estimator.PredictingNet) has no skorch optimizer, so its run gets the other three, and then skorch ends it."""
        if not self.create_artifact or getattr(net, "optimizer_", None) is not None:
            return super().on_train_end(net, **kwargs)
        with tempfile.TemporaryDirectory(prefix="mlp_sweep_mlflow_") as folder:
            files = {"f_params": "params.pth", "f_criterion": "criterion.pth", "f_history": "history.json"}
            files = {key: Path(folder) / name for key, name in files.items()}
            net.save_params(**files)
            for path in files.values():
                self.client_.log_artifact(self.run_.info.run_id, path)
        self.create_artifact = False  # for skorch's on_train_end, which would save the optimizer too
        try:
            super().on_train_end(net, **kwargs)
        finally:
            self.create_artifact = True


def build(logger: dict | None, job_dir: Path, job_name: str) -> list:
    """The callbacks of the `logger` config (None: none) for a job writing into job_dir."""
    if not logger:
        return []
    if logger["name"] == "tensorboard":
        return [("tensorboard", TensorBoardPerFit(str(Path(logger.get("log_dir") or job_dir / "tensorboard"))))]
    uri = logger.get("tracking_uri") or f"sqlite:///{Path('outputs/mlflow.db').absolute()}"
    return [("mlflow", MlflowPerFit(uri, logger["experiment"], job_name))]
