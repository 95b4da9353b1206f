"""What a fresh install needs: every third-party module the code imports is a declared dependency."""
import ast
import importlib.metadata
import re
import sys
import tomllib

from conftest import ROOT

ALIASES = {"sklearn": "scikit-learn", "hydra": "hydra-core", "omegaconf": "omegaconf", "yaml": "pyyaml", "PIL": "pillow"}


def imported_modules() -> dict[str, str]:
    """Top-level names imported by src/ and hydra_plugins/, each with a file that imports it."""
    found = {}
    for path in [*ROOT.glob("src/*.py"), *ROOT.glob("hydra_plugins/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[ <>=!~\[;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in project["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for name, where in imported_modules().items():
        if name in sys.stdlib_module_names or name in ("src", "hydra_plugins", "conftest"):
            continue
        owners = {d.lower().replace("_", "-") for d in distributions.get(name, [name])} | {ALIASES.get(name, name)}
        if not owners & declared:
            missing.append(f"{name} (imported in {where})")
    assert not missing, f"imported but not declared in pyproject.toml's dependencies: {', '.join(missing)}"
