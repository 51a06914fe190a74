"""POST /v1/models/{name}/predict: labels and scores from a Hugging Face text-classification endpoint."""

from __future__ import annotations

import math
from typing import Any

from .clients import RuntimeClient
from .errors import ModelFailed, PayloadTooLarge
from .invoke import invoke_json
from .routing import ResolvedModel, resolve_model
from .schemas import PredictRequest
from .settings import ProxySettings


def classify(
    name: str, request: PredictRequest, *, settings: ProxySettings, runtime: RuntimeClient
) -> tuple[ResolvedModel, dict[str, Any]]:
    """Classify each input text with the classifier `name`; one {label, score} per text, in order."""
    model = resolve_model(name, settings, kind="classifier")
    texts = request.texts
    if len(texts) > settings.max_predict_inputs:
        raise PayloadTooLarge(f"At most {settings.max_predict_inputs} inputs per request; got {len(texts)}.")
    # The inference toolkit's text-classification pipeline takes {"inputs": [...]} and answers one
    # {"label", "score"} per input (or a list of them per input when asked for several labels).
    invocation = invoke_json(runtime, model.endpoint_name, {"inputs": texts})
    answer = invocation.payload
    if not isinstance(answer, list) or len(answer) != len(texts):
        raise ModelFailed(f"Model endpoint '{model.endpoint_name}' returned no prediction per input.")
    return model, {"model": model.short_name, "predictions": [_prediction(item, model) for item in answer]}


def _prediction(item: Any, model: ResolvedModel) -> dict[str, Any]:
    if isinstance(item, list) and item:
        item = max(item, key=lambda candidate: _score(candidate, model))
    return {"label": _label(item, model), "score": _score(item, model)}


def _label(item: Any, model: ResolvedModel) -> str:
    label = item.get("label") if isinstance(item, dict) else None
    if not isinstance(label, str):
        raise ModelFailed(f"Model endpoint '{model.endpoint_name}' returned a prediction without a label.")
    return label


def _score(item: Any, model: ResolvedModel) -> float:
    score = item.get("score") if isinstance(item, dict) else None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ModelFailed(f"Model endpoint '{model.endpoint_name}' returned a prediction without a score.")
    return float(score)
