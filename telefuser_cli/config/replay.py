"""`generate --from-config config.json`: the overrides that reproduce a recorded run.

The recorded document holds every resolved value; we select the same model and pipeline entries
and set every value explicitly, so later edits to the packaged defaults cannot change a replay.
New overrides from the command line win over recorded values.
"""

from __future__ import annotations

from typing import Any

from telefuser_cli.config.guard import fact_fields
from telefuser_cli.config.overrides import format_value, override_key
from telefuser_cli.errors import UserError


def _leaves(tree: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(tree, dict) and tree:
        pairs = []
        for key, value in tree.items():
            pairs.extend(_leaves(value, f"{prefix}.{key}"))
        return pairs
    return [(prefix, tree)]


def overrides_from_document(document: dict[str, Any], overrides: list[str]) -> list[str]:
    try:
        choices = document["choices"]
        model = document["layer1_model_definition"]
        pipeline = document["layer2_inference_config"]
        user = document["layer3_user_inputs"]
        output = document.get("output", {})
        launcher = document.get("launcher", {})
    except (KeyError, TypeError):
        raise UserError("--from-config: not a telefuser config.json (layer1/2/3 sections missing)") from None
    recorded = [f"model={choices['model']}", f"pipeline={choices['pipeline']}"]
    recorded.append(f"model.root={format_value(model['root'])}")
    for component in model.get("models", []):
        root = model["root"].rstrip("/") + "/"
        relative = component["path"][len(root) :] if component["path"].startswith(root) else component["path"]
        recorded.append(f"model.{component['name']}={format_value(relative)}")
    for section, tree in (("pipeline", pipeline), ("user", user), ("output", output), ("launcher", launcher)):
        for key, value in _leaves(tree, section):
            recorded.append(f"{key}={format_value(value)}")
    given = {override_key(o) for o in overrides}
    facts = {f"model.{key}" for key in fact_fields()}
    kept = [o for o in recorded if override_key(o) not in given and override_key(o) not in facts]
    return kept + overrides
