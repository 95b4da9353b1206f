"""A job's identity: its resolved configuration less the keys that change nothing it computes.

Two jobs with the same identity compute the same result, so a finished one is not trained again
(src.store.finished_job), and a sweep's jobs are matched to finished folders by it (src.resume).
"""
import json

# Keys that change what a run prints or logs and whether it resumes (train.verbose, logger, resume), how it
# computes (engine, train.threads: both engines train the same fits), and what the sweep does after its jobs
# (cv.refit, and how the candidates are compared: compare); none changes what a job computes.
NOT_IDENTITY = ("train.verbose", "train.threads", "cv.refit", "resume", "engine", "logger", "compare")


def without(settings: dict, keys) -> dict:
    """`settings` less the dotted `keys` (a copy; the nodes on the way are copied, the rest shared)."""
    out = dict(settings)
    for key in keys:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            if not isinstance(node.get(part), dict):
                break
            node[part] = node = dict(node[part])
        else:
            node.pop(leaf, None)
    return out


def flat(config: dict, prefix: str = "") -> dict:
    """A nested config as {"module.num_units": 64, ...}."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def job_key(identity: dict) -> str:
    """A job's resolved configuration (its identity) as a dictionary key; values compare as the config means them
    (momentum 0 and 0.0 are one value)."""
    return json.dumps(canonical(identity), sort_keys=True, default=str)


def same_job(a: dict, b: dict) -> bool:
    """Whether two identities are one configuration (job_key)."""
    return job_key(a) == job_key(b)


def canonical(value):
    """`value` with every integral float as an int (YAML's `momentum: 0` and the command line's 0.0 are one number)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value
