"""The task integrations moto's Step Functions engine lacks, plugged into it for a local run.

moto (5.x) ships LocalStack's States Language interpreter; it runs Pass/Choice/Wait/Fail, Retry/Catch, intrinsics,
JSONPath and aws-sdk tasks against moto's own services. What it cannot do locally is added here, each as a
subclass of its own service-task class, so the interpreter stays the one that decides control flow:

- ``lambda:invoke``: the function's real handler package (from the synthesized asset) runs in this process with the
  environment variables the template gives the function (moto would need Docker).
- ``sagemaker:createTrainingJob.sync`` / ``createTransformJob.sync``: a LocalTrainingJob / LocalTransformJob (moto
  has no SageMaker integration).
- ``aws-sdk:sagemaker:updateEndpoint``: moto has no UpdateEndpoint; the endpoint in moto's store takes the new config.
- ``sns:publish``: printed to the terminal, then published to moto.
- ``Wait`` states: scaled by ``wait_scale`` (0 locally: nothing is provisioning behind them).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import io
import json
import os
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from moto.stepfunctions.parser.api import HistoryEventType, InvocationResponse, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import StatesErrorNameType
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils, state_task_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.credentials import StateCredentials
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (
    ResourceCondition,
    ResourceRuntimePart,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service import (
    StateTaskService,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
    StateTaskServiceAwsSdk,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback import (
    StateTaskServiceCallback,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_lambda import (
    StateTaskServiceLambda,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sns import (
    StateTaskServiceSns,
)
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction
from moto.stepfunctions.parser.asl.eval.environment import Environment
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.utils.encoding import to_json_str
from moto.utilities.collections import select_from_typed_dict

from .assembly import LambdaFunction
from .training_job import LocalTrainingJob, RequestInvalid, to_state_json
from .transform_job import LocalTransformJob


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object the handlers (and Powertools) read."""

    function: LambdaFunction
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 1024

    @property
    def function_name(self) -> str:
        return self.function.name

    @property
    def invoked_function_arn(self) -> str:
        return self.function.arn

    function_version = "$LATEST"
    log_group_name = "/aws/lambda/local"
    log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@contextlib.contextmanager
def _asset_on_path(asset_dir: Path) -> Iterator[None]:
    """Import the asset's top-level packages from the asset itself, then give back what was imported before."""
    tops = {p.name.removesuffix(".py") for p in asset_dir.iterdir() if p.is_dir() or p.suffix == ".py"}
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] in tops}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(asset_dir))
    try:
        yield
    finally:
        sys.path.remove(str(asset_dir))
        for name in [n for n in sys.modules if n.split(".")[0] in tops]:
            del sys.modules[name]
        sys.modules.update(saved)


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def invoke_function(function: LambdaFunction, event: Any, *, region: str, log_dir: Path) -> dict[str, Any]:
    """Invoke's answer for one call of the function's real handler: Payload, and FunctionError when it raised."""
    module_name, handler_name = function.handler.rsplit(".", 1)
    log_dir.mkdir(parents=True, exist_ok=True)
    variables = {
        **function.environment,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "POWERTOOLS_DEV": "false",
    }
    with (
        (log_dir / f"{function.name}.log").open("a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
        _environment(variables),
        _asset_on_path(function.asset_dir),
    ):
        try:
            handler: Callable[[Any, LambdaContext], Any] = getattr(importlib.import_module(module_name), handler_name)
            payload = handler(event, LambdaContext(function))
            return {"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": json.loads(json.dumps(payload))}
        except Exception as error:  # Lambda turns any exception into an Unhandled function error
            traceback.print_exc(file=log)
            return {
                "StatusCode": 200,
                "ExecutedVersion": "$LATEST",
                "FunctionError": "Unhandled",
                "Payload": {
                    "errorType": type(error).__name__,
                    "errorMessage": str(error),
                    "stackTrace": traceback.format_tb(error.__traceback__),
                },
            }


@dataclass
class LocalServices:
    """What the integrations need: the stage's functions, where jobs run, moto clients, the journal, output."""

    functions: dict[str, LambdaFunction]
    training_code: Callable[[str], Path]
    work_dir: Path
    account: str
    region: str
    out: Any
    client: Callable[[str], Any]
    journal: Callable[[str, dict[str, Any]], None]
    wait_scale: float = 0.0
    #: Reclaim the first spot training job's instance after this step (``finetune local run --interrupt-after-step``).
    interrupt_training_after_step: int | None = None


_SERVICES: LocalServices | None = None


def _services() -> LocalServices:
    if _SERVICES is None:
        raise RuntimeError("local integrations used outside install_integrations()")
    return _SERVICES


def _task_failed(task: StateTaskServiceCallback, env: Environment, error: str, cause: str) -> FailureEventException:
    return FailureEventException(
        FailureEvent(
            env=env,
            error_name=CustomErrorName(error)
            if not error.startswith("States.")
            else StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
            event_type=HistoryEventType.TaskFailed,
            # moto declares EventDetails total, though an event carries only its own kind of details
            event_details=EventDetails(  # type: ignore[typeddict-item]
                taskFailedEventDetails=TaskFailedEventDetails(
                    resource=task._get_sfn_resource(),
                    resourceType=task._get_sfn_resource_type(),
                    error=error,
                    cause=cause,
                )
            ),
        )
    )


class LocalLambda(StateTaskServiceLambda):
    """``lambda:invoke`` through the real handler package, in this process."""

    def _eval_service_task(
        self,
        env: Environment,
        resource_runtime_part: ResourceRuntimePart,
        normalised_parameters: dict[str, Any],
        state_credentials: StateCredentials,
    ) -> None:
        services = _services()
        name = normalised_parameters["FunctionName"]
        function = services.functions.get(name)
        if function is None:
            raise _task_failed(self, env, "Lambda.ResourceNotFoundException", f"Function not found: {name}")
        payload = json.loads(normalised_parameters.get("Payload") or b"{}")
        response = invoke_function(function, payload, region=services.region, log_dir=services.work_dir / "lambda")
        if response.get("FunctionError"):
            raise lambda_eval_utils.LambdaFunctionErrorException(
                response["FunctionError"], json.dumps(response["Payload"], separators=(",", ":"))
            )
        env.stack.append(select_from_typed_dict(typed_dict=InvocationResponse, obj=response))


class LocalSageMaker(StateTaskServiceCallback):
    """``sagemaker:createTrainingJob(.sync)`` as a LocalTrainingJob, ``createTransformJob(.sync)`` as a
    LocalTransformJob."""

    def __init__(self) -> None:
        # ResourceCondition(...): moto's constants are plain str, its parameter a set of ResourceCondition
        super().__init__(
            supported_integration_patterns={
                ResourceCondition(ResourceCondition.WaitForTaskToken),
                ResourceCondition(ResourceCondition.Sync),
            }
        )
        self._job: LocalTrainingJob | LocalTransformJob | None = None

    def _validate_service_integration_is_supported(self) -> None:
        if self.resource.api_action.lower() not in ("createtrainingjob", "createtransformjob"):
            raise ValueError(
                f"local mode runs sagemaker:createTrainingJob and createTransformJob only, not "
                f"{self.resource.resource_arn}"
            )

    def _get_sfn_resource_type(self) -> str:
        return "sagemaker"

    def _eval_service_task(
        self,
        env: Environment,
        resource_runtime_part: ResourceRuntimePart,
        normalised_parameters: dict[str, Any],
        state_credentials: StateCredentials,
    ) -> None:
        services = _services()
        if self.resource.api_action.lower() == "createtransformjob":
            try:
                transform_job = LocalTransformJob(
                    normalised_parameters,
                    sagemaker=services.client("sagemaker"),
                    s3=services.client("s3"),
                    work_dir=services.work_dir / "transform-jobs",
                    account=services.account,
                    region=services.region,
                    out=services.out,
                )
            except RequestInvalid as error:
                raise _task_failed(self, env, "SageMaker.AmazonSageMakerException", str(error)) from None
            self._job = transform_job
            env.stack.append({"TransformJobArn": transform_job.arn})
            return
        # One interruption per run, of a spot job (an on-demand instance is not reclaimed).
        interrupt = (
            services.interrupt_training_after_step if normalised_parameters.get("EnableManagedSpotTraining") else None
        )
        if services.interrupt_training_after_step is not None and interrupt is None:
            print(
                f"    note: {normalised_parameters['TrainingJobName']} is not a spot job; no interruption",
                file=services.out,
                flush=True,
            )
        try:
            training_job = LocalTrainingJob(
                normalised_parameters,
                code_dir=services.training_code(normalised_parameters["AlgorithmSpecification"]["TrainingImage"]),
                work_dir=services.work_dir / "training-jobs",
                s3=services.client("s3"),
                account=services.account,
                region=services.region,
                out=services.out,
                interrupt_after_step=interrupt,
            )
        except RequestInvalid as error:
            raise _task_failed(self, env, "SageMaker.AmazonSageMakerException", str(error)) from None
        if interrupt is not None:
            services.interrupt_training_after_step = None
        self._job = training_job
        env.stack.append({"TrainingJobArn": training_job.arn})

    def _build_sync_resolver(
        self,
        env: Environment,
        resource_runtime_part: ResourceRuntimePart,
        normalised_parameters: dict[str, Any],
        state_credentials: StateCredentials,
    ) -> Callable[[], Any]:
        env.stack.pop()  # CreateTrainingJob's answer; .sync answers with DescribeTrainingJob's
        job = self._job
        if job is None:
            raise RuntimeError("a .sync resolver was asked for before its job was created")

        def resolve() -> dict[str, Any]:
            try:
                described = job.run()
            except RequestInvalid as error:
                raise _task_failed(self, env, "SageMaker.AmazonSageMakerException", str(error)) from None
            status = described.get("TrainingJobStatus") or described.get("TransformJobStatus")
            _services().journal(
                "trainingJob" if "TrainingJobName" in described else "transformJob", to_state_json(described)
            )
            if status != "Completed":
                raise _task_failed(self, env, "States.TaskFailed", to_json_str(to_state_json(described)))
            state: dict[str, Any] = to_state_json(described)
            return state

        return resolve


class LocalAwsSdk(StateTaskServiceAwsSdk):
    """aws-sdk tasks to moto, with UpdateEndpoint done here; SageMaker writes go to the local journal."""

    def _eval_service_task(
        self,
        env: Environment,
        resource_runtime_part: ResourceRuntimePart,
        normalised_parameters: dict[str, Any],
        state_credentials: StateCredentials,
    ) -> None:
        services = _services()
        service, action = self._get_boto_service_name(), self._get_boto_service_action()
        if service == "sagemaker" and action == "update_endpoint":
            env.stack.append(update_endpoint(services.client("sagemaker"), normalised_parameters))
        else:
            super()._eval_service_task(env, resource_runtime_part, normalised_parameters, state_credentials)
            # Step Functions hands aws-sdk timestamps on as ISO 8601 text; moto's engine leaves datetime objects,
            # which its own States.JsonToString cannot serialize.
            env.stack.append(_iso_timestamps(env.stack.pop()))
        if service == "sagemaker" and action.startswith(("create_", "update_", "delete_")):
            services.journal(self.resource.api_action, {"request": normalised_parameters, "response": env.stack[-1]})


def _iso_timestamps(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _iso_timestamps(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_iso_timestamps(v) for v in value]
    return value


def update_endpoint(sagemaker: Any, request: dict[str, Any]) -> dict[str, Any]:
    """UpdateEndpoint against moto's store: the named config must exist; the endpoint serves it at once."""
    from moto.sagemaker.models import sagemaker_backends

    config = sagemaker.describe_endpoint_config(EndpointConfigName=request["EndpointConfigName"])
    endpoint = sagemaker.describe_endpoint(EndpointName=request["EndpointName"])
    account, region = endpoint["EndpointArn"].split(":")[4], endpoint["EndpointArn"].split(":")[3]
    fake = sagemaker_backends[account][region].endpoints[request["EndpointName"]]
    fake.endpoint_config_name = config["EndpointConfigName"]
    fake.production_variants = fake._process_production_variants(config["ProductionVariants"])
    fake.endpoint_status = "InService"
    return {"EndpointArn": endpoint["EndpointArn"]}


class LocalSns(StateTaskServiceSns):
    """``sns:publish``: printed, then published to moto."""

    def _eval_service_task(
        self,
        env: Environment,
        resource_runtime_part: ResourceRuntimePart,
        normalised_parameters: dict[str, Any],
        state_credentials: StateCredentials,
    ) -> None:
        services = _services()
        message = normalised_parameters.get("Message")
        print(
            f"  notification: {normalised_parameters.get('Subject', '')}\n    "
            f"{message if isinstance(message, str) else json.dumps(message)}",
            file=services.out,
            flush=True,
        )
        super()._eval_service_task(env, resource_runtime_part, normalised_parameters, state_credentials)


_ORIGINAL_FACTORY = state_task_service_factory.state_task_service_for
_ORIGINAL_WAIT = WaitFunction._wait_interval


def _local_service_for(service_name: str) -> StateTaskService:
    local: dict[str, Callable[[], StateTaskService]] = {
        "lambda": LocalLambda,
        "sagemaker": LocalSageMaker,
        "aws-sdk": LocalAwsSdk,
        "sns": LocalSns,
    }
    return local[service_name]() if service_name in local else _ORIGINAL_FACTORY(service_name)


def _scaled_wait(self: WaitFunction, env: Environment, wait_seconds: int) -> None:
    # moto annotates the seconds as int; the Event.wait it passes them to takes the scaled float as well
    _ORIGINAL_WAIT(self, env, wait_seconds * _services().wait_scale)  # type: ignore[arg-type]


@contextlib.contextmanager
def install_integrations(services: LocalServices) -> Iterator[LocalServices]:
    """Plug the local integrations into moto's engine for the duration of a run."""
    global _SERVICES
    _SERVICES = services
    try:
        with (
            mock.patch.object(state_task_factory, "state_task_service_for", _local_service_for),
            mock.patch.object(WaitFunction, "_wait_interval", _scaled_wait),
        ):
            yield services
    finally:
        _SERVICES = None


__all__ = ["LocalServices", "install_integrations", "invoke_function", "io", "update_endpoint"]
