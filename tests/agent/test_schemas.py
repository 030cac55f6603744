"""The JSON Schemas in docs/schemas stay in step with the code that emits the payloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.errors import Reason

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.json")), ids=lambda p: p.name)
def test_every_schema_is_valid_json_with_an_id_and_a_title(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert doc["$schema"].startswith("https://json-schema.org/")
    assert doc["$id"].endswith(f"/{path.name}")
    assert doc["title"] and ("type" in doc or "oneOf" in doc)


def test_model_state_reasons_are_exactly_the_agents() -> None:
    doc = json.loads((SCHEMAS / "model-state.json").read_text())
    assert set(doc["properties"]["reason"]["enum"]) == {r.value for r in Reason} | {None}
