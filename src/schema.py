"""The configuration's schema: pydantic models that mirror conf/, a type and a range for every key a user sets.

pydantic gives per-key messages such as "module.num_units=1: Input should be greater than or equal to 2";
OmegaConf's structured configs would check the types but not the ranges. The module node has one model per
module class (by module._target_: none for the MLP, module=cnn, any other class for your own); for_settings()
picks the whole config's. src.config checks each job against it, and then what a schema cannot see.
"""
import functools
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from sklearn.metrics import get_scorer_names

from src import loggers
from src.cnn import IMAGE
from src.data import SCALINGS
from src.layers import ACTIVATIONS, INITS
from src.loggers import LOGGERS
from src.precision import PRECISIONS

ENGINES = ("auto", "fused", "gridsearch")     # engine= (src.engine.choose resolves auto)
VERBOSITY = ("quiet", "fold", "epoch", "bar")  # train.verbose= (src.estimator.build_estimator)


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ModuleSchema(_Group):
    num_units: int = Field(ge=2)  # the second layer has num_units // 2 >= 1 units
    hidden_sizes: list | None = None  # replaces num_units's [num_units, num_units // 2] (_check_architecture: not both)
    input_dim: int = Field(ge=1)
    num_classes: int = Field(ge=2)
    activation: Literal[tuple(ACTIVATIONS)]
    init: Literal[INITS]

    @field_validator("hidden_sizes")
    @classmethod
    def _widths(cls, sizes: list | None) -> list | None:
        if sizes is not None and (not sizes or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in sizes)):
            raise ValueError("must be a non-empty list of hidden-layer widths, each an integer >= 1, e.g. [256,128] (or null: num_units)")
        return sizes


class CNNSchema(_Group):  # module=cnn (src.cnn.CNN)
    target: Literal["src.cnn.CNN"] = Field(alias="_target_")
    channels: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=4)  # a block each; 4 halve 28x28 to 1x1
    kernel_size: int = Field(ge=1)
    num_classes: int = Field(ge=2)
    activation: Literal[tuple(ACTIVATIONS)]
    init: Literal[INITS]

    @field_validator("kernel_size")
    @classmethod
    def _within_the_image(cls, size: int) -> int:
        if size > IMAGE[1]:  # legal for the padded conv, but each output then sees little more than padding, at a high cost
            raise ValueError(f"is larger than the {IMAGE[1]}x{IMAGE[2]} images; use 1 to {IMAGE[1]} (3 or 5 are usual)")
        return size


class OwnModuleSchema(_Group):  # module=custom: any keyword of the module's class, checked by building it (_check_module)
    model_config = ConfigDict(extra="allow", strict=True)
    target: str = Field(alias="_target_")


MODULE_SCHEMAS = {"src.cnn.CNN": CNNSchema}  # by module._target_; the MLP has none (ModuleSchema), any other class OwnModuleSchema


class OptimizerSchema(_Group):
    model_config = ConfigDict(extra="allow", strict=True)  # any keyword of the chosen torch.optim class
    target: str = Field(alias="_target_")
    lr: float = Field(gt=0, allow_inf_nan=False)


class TrainSchema(_Group):
    max_epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    shuffle: bool
    valid_split: float | None = Field(gt=0, lt=1)
    threads: int | None = Field(default=None, ge=1)
    verbose: Literal[VERBOSITY]
    precision: Literal[PRECISIONS] = "fp32"  # src.precision; a job recorded before the key existed is fp32


class CVSchema(_Group):
    folds: int = Field(ge=2)
    shuffle: bool
    repeats: int = Field(default=1, ge=1)  # after shuffle: its check reads shuffle
    refit: bool = True
    scoring: list[str] = Field(min_length=1)

    @field_validator("repeats")
    @classmethod
    def _shuffled(cls, repeats: int, info) -> int:
        if repeats > 1 and info.data.get("shuffle") is False:
            raise ValueError("repeats of an unshuffled split are the same split; set cv.shuffle=true, or cv.repeats=1")
        return repeats

    @field_validator("scoring")
    @classmethod
    def _known_scorers(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in get_scorer_names()]
        if unknown:
            raise ValueError(f"unknown scorer {unknown[0]!r}; scikit-learn knows e.g. accuracy, balanced_accuracy, f1_macro, roc_auc_ovr")
        return names


class CompareSchema(_Group):
    rope: float = Field(ge=0, allow_inf_nan=False)        # the region of practical equivalence, +-rope in the metric's units
    confidence: float = Field(gt=0.5, lt=1, allow_inf_nan=False)  # the probability a verdict needs


class DatasetSchema(_Group):
    model_config = ConfigDict(extra="allow", strict=True)  # each data set has its own keys
    target: str = Field(alias="_target_")
    limit: int | None = Field(default=None, ge=1)
    test_size: float | None = Field(default=None, gt=0, lt=1)
    scaling: Literal[SCALINGS] = "standard"


class LoggerSchema(_Group):
    model_config = ConfigDict(extra="allow", strict=True)  # each logger has its own keys
    name: Literal[LOGGERS]

    @field_validator("name")
    @classmethod
    def _installed(cls, name: str) -> str:
        if loggers.missing(name):  # an optional extra: refused before any job starts, not in the middle of a fit
            raise ValueError(loggers.missing(name))
        return name


class ConfigSchema(_Group):
    dataset: DatasetSchema
    module: ModuleSchema
    optimizer: OptimizerSchema
    cv: CVSchema
    compare: CompareSchema
    train: TrainSchema
    seed: int = Field(ge=0, le=2**32 - 1)  # numpy's and scikit-learn's random_state take no more
    device: str = Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    engine: Literal[ENGINES]
    resume: bool
    logger: LoggerSchema | None = None


@functools.cache
def config_schema(module_schema: type[BaseModel]) -> type[ConfigSchema]:
    """ConfigSchema with this schema for its module node."""
    if module_schema is ModuleSchema:
        return ConfigSchema
    return create_model("ConfigSchema", __base__=ConfigSchema, module=(module_schema, ...))


def for_settings(settings: dict) -> type[ConfigSchema]:
    """The schema of a job's whole config, with its module class's model for the module node."""
    module = settings.get("module")
    target = module.get("_target_") if isinstance(module, dict) else None
    return config_schema(ModuleSchema if target is None else MODULE_SCHEMAS.get(target, OwnModuleSchema))
