"""src/identity.py: when two jobs are one (job_key, same_job), and the keys that change nothing a job computes."""
from src import config
from src.identity import NOT_IDENTITY, flat, job_key, same_job, without


def test_one_configuration_however_its_numbers_are_written():
    a = {"optimizer": {"lr": 0.01, "momentum": 0}, "module": {"num_units": 64}, "cv": {"scoring": ["accuracy"]}}
    b = {"cv": {"scoring": ["accuracy"]}, "module": {"num_units": 64.0}, "optimizer": {"momentum": 0.0, "lr": 0.01}}
    assert job_key(a) == job_key(b) and same_job(a, b)  # YAML's 0 is the command line's 0.0; key order does not matter
    assert not same_job(a, {**a, "module": {"num_units": 65}})
    assert not same_job(a, {**a, "cv": {"scoring": ["accuracy", "f1_macro"]}})


def test_without_and_flat_leave_their_input_alone():
    settings = {"train": {"verbose": "fold", "max_epochs": 25}, "resume": True, "seed": 0}
    assert without(settings, ["train.verbose", "resume", "no.such.key"]) == {"train": {"max_epochs": 25}, "seed": 0}
    assert settings == {"train": {"verbose": "fold", "max_epochs": 25}, "resume": True, "seed": 0}
    assert flat(settings) == {"train.verbose": "fold", "train.max_epochs": 25, "resume": True, "seed": 0}


def test_the_keys_that_are_not_identity_change_no_job(compose_cfg):
    base = config.identity(config.settings_of(compose_cfg("dataset.limit=150")))
    others = ["train.verbose=quiet", "train.threads=1", "cv.refit=false", "resume=false", "engine=gridsearch", "compare.rope=0.05"]
    for override in others:
        assert same_job(config.identity(config.settings_of(compose_cfg("dataset.limit=150", override))), base), override
    assert {o.split("=")[0].split(".")[0] for o in others} <= {k.split(".")[0] for k in NOT_IDENTITY}
    assert not same_job(config.identity(config.settings_of(compose_cfg("dataset.limit=150", "seed=1"))), base)


def test_precision_is_part_of_a_jobs_identity_and_fp32_leaves_it_as_it_was(compose_cfg):
    """An fp32 job's identity is the one recorded before train.precision existed (its folder is resumed from); a bf16 or
    tf32 job computes other numbers, and is another job."""
    def ident(*overrides):
        return config.identity(config.settings_of(compose_cfg("dataset.limit=150", *overrides)))

    base = ident()
    assert "precision" not in base["train"] and same_job(ident("train.precision=fp32"), base)
    bf16, tf32 = ident("train.precision=bf16"), ident("train.precision=tf32")
    assert bf16["train"]["precision"] == "bf16" and tf32["train"]["precision"] == "tf32"
    assert not same_job(bf16, base) and not same_job(tf32, base) and not same_job(bf16, tf32)
