"""``finetune local serve``: the stage's inference API on http://127.0.0.1:PORT/v1.

The real proxy Lambda (its synthesized asset and environment) answers every request, behind a local HTTP server
that turns requests into API Gateway proxy events. Its ``sagemaker-runtime`` calls are answered at the wire: an
InvokeEndpoint request for an endpoint that a local run deployed reaches the model's container (running here over
the unpacked model.tar.gz the endpoint's model package names); anything else gets the error SageMaker returns.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import re
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock
from urllib.parse import parse_qsl, unquote, urlsplit

from .assembly import LambdaFunction
from .containers import ContainerError, container_for
from .integrations import LambdaContext, _asset_on_path, _environment
from .stage import LocalStage
from .training_job import split_s3

if TYPE_CHECKING:
    from botocore.awsrequest import AWSPreparedRequest
    from moto.core.common_types import TYPE_RESPONSE

_INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/invocations$")


def model_container(sagemaker: Any, s3: Any, model_name: str, work: Path) -> tuple[str, Any]:
    """(model data URL, running container) of a SageMaker model: its container, or its model package's, over the
    unpacked model.tar.gz. Raises when the artifact is not in the local store."""
    model = sagemaker.describe_model(ModelName=model_name)
    container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
    if container.get("ModelPackageName"):
        # SageMaker runs the package's container with the package's environment, and the model's on top of it.
        package = sagemaker.describe_model_package(ModelPackageName=container["ModelPackageName"])
        registered = package["InferenceSpecification"]["Containers"][0]
        container = {
            **registered,
            "Environment": {**(registered.get("Environment") or {}), **(container.get("Environment") or {})},
        }
    url = container.get("ModelDataUrl", "")
    target = work / re.sub(r"[^A-Za-z0-9._-]+", "_", url)[-100:]
    if not (target / ".unpacked").is_file():
        target.mkdir(parents=True, exist_ok=True)
        archive = target / "model.tar.gz"
        s3.download_file(*split_s3(url), str(archive))
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        archive.unlink()
        (target / ".unpacked").touch()
    return url, container_for(container["Image"], target, container.get("Environment") or {})


def deployed_models(stage: LocalStage, work: Path, out: Any) -> dict[str, Any]:
    """Endpoint name -> container, for each endpoint of the stage whose model's artifact exists locally."""
    sagemaker, s3 = stage.client("sagemaker"), stage.client("s3")
    containers = {}
    for endpoint in sagemaker.list_endpoints()["Endpoints"]:
        name = endpoint["EndpointName"]
        config = sagemaker.describe_endpoint_config(
            EndpointConfigName=sagemaker.describe_endpoint(EndpointName=name)["EndpointConfigName"]
        )
        try:
            url, containers[name] = model_container(
                sagemaker, s3, config["ProductionVariants"][0]["ModelName"], work / name
            )
        except Exception as error:  # S3 and archive errors: the endpoint is just not servable
            print(
                f"  {name}: not served (its model artifact is not in the local store: {error.__class__.__name__}"
                "); deploy to it with finetune local run --deploy-to",
                file=out,
                flush=True,
            )
            continue
        print(f"  {name}: {url}", file=out, flush=True)
    return containers


@contextlib.contextmanager
def local_runtime(containers: dict[str, Any], account: str) -> Iterator[None]:
    """Answer sagemaker-runtime InvokeEndpoint requests from the local containers (before moto sees them)."""
    from moto.core.models import botocore_stubber

    original = botocore_stubber.process_request

    def process(request: AWSPreparedRequest) -> TYPE_RESPONSE | None:
        url = urlsplit(request.url)
        match = _INVOCATIONS.match(url.path) if url.netloc.startswith("runtime.sagemaker.") else None
        if not match:
            return original(request)
        name = unquote(match.group(1))
        container = containers.get(name)
        if container is None:
            return (
                400,
                {"x-amzn-ErrorType": "ValidationError", "Content-Type": "application/json"},
                json.dumps({"message": f"Endpoint {name} of account {account} not found."}),
            )
        body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()

        def header(name: str) -> str:  # botocore's prepared headers may hold bytes
            value = request.headers.get(name, "application/json")
            return value.decode() if isinstance(value, bytes) else value

        try:
            answer, content_type = container.invoke(body, header("Content-Type"), header("Accept"))
        except ContainerError as error:
            return (
                424,
                {"x-amzn-ErrorType": "ModelError", "Content-Type": "application/json"},
                json.dumps(
                    {
                        "message": f'Received client error ({error.status}) from model with message "{error}".',
                        "OriginalStatusCode": error.status,
                        "OriginalMessage": str(error),
                    }
                ),
            )
        return 200, {"Content-Type": content_type, "x-Amzn-Invoked-Production-Variant": "AllTraffic"}, answer

    with mock.patch.object(botocore_stubber, "process_request", process):
        yield


def rest_event(method: str, target: str, headers: dict[str, str], body: bytes, stage_name: str) -> dict[str, Any]:
    """An API Gateway REST API proxy-integration event, as the stage's `api` deployment sends it."""
    url = urlsplit(target)
    query = dict(parse_qsl(url.query)) or None
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    return {
        "resource": "/{proxy+}",
        "path": url.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "pathParameters": {"proxy": url.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/{stage_name}{url.path}",
            "stage": stage_name,
            "requestId": str(uuid.uuid4()),
            "protocol": "HTTP/1.1",
            "identity": {
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("User-Agent", ""),
                "caller": "local",
                "user": "local",
                "userArn": "arn:aws:iam::local",
            },
        },
        "body": text or None,
        "isBase64Encoded": encoded,
    }


def without_component_models(environment: dict[str, str]) -> dict[str, str]:
    """The proxy's environment without the models of LoRA endpoints (base and adapters): a local session has no
    inference components (moto lacks them), so those names answer 404 locally instead of failing every listing."""
    if "ENDPOINTS" not in environment:
        return dict(environment)
    models = json.loads(environment["ENDPOINTS"])
    kept = {name: spec for name, spec in models.items() if not spec.get("inference_component")}
    return {**environment, "ENDPOINTS": json.dumps(kept, separators=(",", ":"))}


class LocalApi:
    """The proxy function behind an HTTP server; ``url`` is the OpenAI-style base URL (``.../v1``)."""

    def __init__(self, stage: LocalStage, *, port: int, host: str = "127.0.0.1") -> None:
        self.stage, self.host, self.port = stage, host, port
        self.url = ""

    @contextlib.contextmanager
    def running(self, out: Any) -> Iterator[LocalApi]:
        stage = self.stage
        work = stage.folder / "serving"
        with stage.session(work):
            containers = deployed_models(stage, work, out)
            proxy = next(
                (f for f in stage.assembly.lambda_functions().values() if f.handler.startswith("inference_proxy.")),
                None,
            )
            if proxy is None:
                raise ContainerError(500, f"{stage.config.qualified_name} has no inference proxy (no endpoints)")
            variables = {
                **without_component_models(proxy.environment),
                "AWS_REGION": stage.assembly.region,
                "AWS_LAMBDA_FUNCTION_NAME": proxy.name,
            }
            with (
                local_runtime(containers, stage.assembly.account),
                _environment(variables),
                _asset_on_path(proxy.asset_dir),
            ):
                module_name, handler_name = proxy.handler.rsplit(".", 1)
                handler = getattr(importlib.import_module(module_name), handler_name)
                log = work / f"{proxy.name}.log"
                print(f"  the proxy's logs and metrics go to {log}", file=out, flush=True)
                server = HTTPServer((self.host, self.port), _request_handler(handler, proxy, log))
                self.port = server.server_address[1]
                self.url = f"http://{self.host}:{self.port}/v1"
                thread = threading.Thread(target=server.serve_forever, daemon=True)
                thread.start()
                try:
                    yield self
                finally:
                    server.shutdown()
                    server.server_close()


def _request_handler(
    handler: Callable[[dict[str, Any], LambdaContext], dict[str, Any]], function: LambdaFunction, log: Path
) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _call(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items()}
            # One Lambda instance: one request at a time; what it prints (logs, EMF metrics) goes to its log file.
            with lock, log.open("a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                response = handler(rest_event(self.command, self.path, headers, body, "api"), LambdaContext(function))
            payload = response.get("body") or ""
            data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
            self.send_response(int(response.get("statusCode", 200)))
            for key, value in (response.get("headers") or {}).items():
                self.send_header(key, value)
            for key, values in (response.get("multiValueHeaders") or {}).items():
                for value in values:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _call

        def log_message(self, format: str, *args: Any) -> None:  # `format`: the base class's name
            pass

    return Handler
