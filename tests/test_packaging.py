"""What a fresh install needs: every third-party module the code imports is a declared dependency."""
import ast
import importlib.metadata
import re
import sys
import tomllib

from conftest import ROOT

ALIASES = {"sklearn": "scikit-learn", "hydra": "hydra-core", "omegaconf": "omegaconf", "yaml": "pyyaml", "PIL": "pillow"}


def imported_modules(lazy: bool = False) -> dict[str, str]:
    """Top-level names imported by src/ and hydra_plugins/, each with a file that imports it: at module level,
    or (lazy=True) only inside functions, where an optional extra may provide them."""
    found = {}
    for path in [*ROOT.glob("src/*.py"), *ROOT.glob("hydra_plugins/**/*.py")]:
        tree = ast.parse(path.read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inside = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            if (id(node) in inside) != lazy:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[ <>=!~\[;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in requirements}


def missing_from(declared: set[str], imported: dict[str, str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for name, where in imported.items():
        if name in sys.stdlib_module_names or name in ("src", "hydra_plugins", "conftest"):
            continue
        owners = {d.lower().replace("_", "-") for d in distributions.get(name, [name])} | {ALIASES.get(name, name)}
        if not owners & declared:
            missing.append(f"{name} (imported in {where})")
    return missing


def test_every_imported_package_is_declared():
    """Module-level imports need a dependency; imports inside functions (an optional logger) at least an extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = names(project["dependencies"])
    extras = core | names([r for reqs in project["optional-dependencies"].values() for r in reqs])
    missing = missing_from(core, imported_modules()) + missing_from(extras, imported_modules(lazy=True))
    assert not missing, f"imported but not declared in pyproject.toml: {', '.join(missing)}"
