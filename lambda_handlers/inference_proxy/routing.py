"""Which endpoint a model name means, and whether this team stage may call it."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidRequest, ModelForbidden, ModelNotFound
from .settings import Kind, ProxySettings


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model name resolved to one of this team stage's endpoints."""

    short_name: str
    endpoint_name: str
    kind: Kind
    #: The inference component to invoke on the endpoint (a base model or one of its LoRA adapters).
    inference_component: str | None = None

    def target(self) -> dict[str, str]:
        """The InvokeEndpoint(WithResponseStream) parameters that address this model."""
        if self.inference_component is None:
            return {"EndpointName": self.endpoint_name}
        return {"EndpointName": self.endpoint_name, "InferenceComponentName": self.inference_component}


def resolve_model(name: str, settings: ProxySettings, *, kind: Kind | None) -> ResolvedModel:
    """Resolve a short name or full endpoint name; raise 403/404/400 if it is not ours or not `kind`.

    `kind` None accepts either kind (GET /v1/models/{id}).

    A full endpoint name from another team or stage gets 403 without any call to SageMaker, so the
    answer reveals nothing about which endpoints exist outside this team stage.
    """
    endpoint = settings.endpoints.get(name)
    short_name = name
    if endpoint is None and name.startswith(settings.endpoint_prefix):
        short_name = name.removeprefix(settings.endpoint_prefix)
        endpoint = settings.endpoints.get(short_name)
        if endpoint is None or endpoint.endpoint_name != name:
            raise ModelNotFound(_not_found_message(name, settings), param="model")
    if endpoint is None:
        if _looks_like_foreign_endpoint(name, settings):
            raise ModelForbidden(
                f"Model '{_printable(name)}' does not belong to team '{settings.team}', stage '{settings.stage}'.",
                param="model",
            )
        raise ModelNotFound(_not_found_message(name, settings), param="model")
    if kind is not None and endpoint.kind != kind:
        route = "/v1/chat/completions" if endpoint.kind == "llm" else f"/v1/models/{short_name}/predict"
        raise InvalidRequest(f"Model '{short_name}' is a {endpoint.kind} endpoint; call it at {route}.", param="model")
    return ResolvedModel(
        short_name=short_name,
        endpoint_name=endpoint.endpoint_name,
        kind=endpoint.kind,
        inference_component=endpoint.inference_component,
    )


def _looks_like_foreign_endpoint(name: str, settings: ProxySettings) -> bool:
    # Endpoint names are `{team}-{stage}-{name}`: three or more dash-separated parts, or our own team
    # with another stage. Short names never need to look like that, so this does not shadow a typo's 404.
    parts = name.split("-")
    if any(not part.isalnum() or not part.isascii() for part in parts):
        return False
    return len(parts) >= 3 or (len(parts) >= 2 and parts[0] == settings.team)


def _not_found_message(name: str, settings: ProxySettings) -> str:
    known = ", ".join(sorted(settings.endpoints)) or "none"
    return f"Model '{_printable(name)}' not found; this API serves: {known}."


def _printable(name: str) -> str:
    # Echo at most a bounded, printable form of the caller's input.
    shown = "".join(character if character.isprintable() else "?" for character in name[:80])
    return shown + ("..." if len(name) > 80 else "")
