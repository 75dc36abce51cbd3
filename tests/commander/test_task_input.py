"""What reaches a N0D3's command line is checked at the API (issue 17, item 8): a task's model
has the wire's strict form and its prompt is not blank, for tasks and pipeline steps alike."""

from __future__ import annotations

import pytest

BAD = [
    pytest.param("model", "claude\x00sonnet", id="model-nul"),
    pytest.param("model", "--dangerously-skip-permissions", id="model-option"),
    pytest.param("model", "claude sonnet", id="model-space"),
    pytest.param("model", "claude-sonnet\n", id="model-newline"),
    pytest.param("model", "claude;rm -rf ~", id="model-shell"),
    pytest.param("model", "m" * 129, id="model-too-long"),
    pytest.param("prompt", " \n\t ", id="prompt-blank"),
]
GOOD_MODELS = ["claude-sonnet-5-5", "sonnet", "opus[1m]", "claude-3-5-sonnet-v2@20241022",
               "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
               "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"]


def refused(response, field: str) -> None:
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request" and field in error["message"], error


@pytest.mark.parametrize("field, value", BAD)
def test_a_task_whose_input_no_node_could_run_is_refused_naming_the_field(client, bearer, field, value):
    body = {"prompt": "hi", field: value}
    refused(client.post("/api/tasks", json=body, headers=bearer()), field)
    assert client.get("/api/tasks", headers=bearer()).get_json()["tasks"] == []


@pytest.mark.parametrize("field, value", BAD)
def test_a_pipeline_step_whose_input_no_node_could_run_is_refused_naming_the_field(client, bearer, field, value):
    body = {"steps": [{"key": "a", "prompt": "hi"}, {"key": "b", "prompt": "hi", field: value}]}
    refused(client.post("/api/pipelines", json=body, headers=bearer()), f"steps.1.{field}")
    assert client.get("/api/tasks", headers=bearer()).get_json()["tasks"] == []


@pytest.mark.parametrize("model", GOOD_MODELS)
def test_model_ids_aliases_and_provider_ids_are_taken(client, bearer, model):
    response = client.post("/api/tasks", json={"prompt": "hi", "model": model}, headers=bearer())
    assert response.status_code == 201 and response.get_json()["model"] == model
