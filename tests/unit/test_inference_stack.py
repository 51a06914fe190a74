"""Inference stack: endpoints, the authenticated API, the proxy's scoped IAM and batch inference."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.synth

DEV, PROD = "search-dev", "search-prod"


def _resources(assembly, stage, resource_type):
    return assembly.stack(stage, "Inference").resources_of_type(resource_type)


def _statements(assembly, stage):
    for policy in _resources(assembly, stage, "AWS::IAM::ManagedPolicy").values():
        yield from policy["Properties"]["PolicyDocument"]["Statement"]


def _actions(statement):
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def _as_list(value):
    return value if isinstance(value, list) else [value]


# --- API ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", [DEV, PROD])
def test_every_method_uses_iam_authorization(assembly, stage):
    methods = _resources(assembly, stage, "AWS::ApiGateway::Method")
    assert len(methods) == 4
    assert {m["Properties"]["AuthorizationType"] for m in methods.values()} == {"AWS_IAM"}
    # list models, retrieve one (OpenAI `models.retrieve`), chat completions, predict
    assert sorted(m["Properties"]["HttpMethod"] for m in methods.values()) == ["GET", "GET", "POST", "POST"]


@pytest.mark.parametrize("stage", [DEV, PROD])
def test_every_method_streams_from_the_function_with_response_streaming_invocations(assembly, stage):
    (function_id,) = _resources(assembly, stage, "AWS::Lambda::Function")
    for method in _resources(assembly, stage, "AWS::ApiGateway::Method").values():
        integration = method["Properties"]["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert integration["ResponseTransferMode"] == "STREAM"
        uri = json.dumps(integration["Uri"])
        # InvokeWithResponseStream, not Invoke (`.../2015-03-31/functions/.../invocations`)
        assert ":lambda:path/2021-11-15/functions/" in uri and "/response-streaming-invocations" in uri
        assert function_id in uri


@pytest.mark.parametrize("stage", [DEV, PROD])
def test_every_gateway_response_carries_the_request_id_and_an_openai_error_body(assembly, stage):
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in _resources(assembly, stage, "AWS::ApiGateway::GatewayResponse").values()
    }
    # The defaults cover every refusal API Gateway makes itself (authorizer, WAF, missing route, 5xx faults).
    assert {
        "DEFAULT_4XX",
        "DEFAULT_5XX",
        "ACCESS_DENIED",
        "THROTTLED",
        "BAD_REQUEST_BODY",
        "INTEGRATION_TIMEOUT",
    } <= set(responses)
    for response_type, properties in responses.items():
        # API Gateway's own request id, as the proxy's x-request-id and the access log carry it.
        assert properties["ResponseParameters"] == {"gatewayresponse.header.x-request-id": "context.requestId"}, (
            response_type
        )
        body = properties["ResponseTemplates"]["application/json"]
        assert '"type": "' in body and '"code": "' in body and '"param": null' in body, response_type
    assert responses["DEFAULT_4XX"]["ResponseTemplates"]["application/json"].count("invalid_request_error") == 1


def test_proxy_function_runs_the_streaming_runtime_client(assembly):
    from pathlib import Path

    (function,) = _resources(assembly, DEV, "AWS::Lambda::Function").values()
    wrapper = function["Properties"]["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"]
    assert wrapper == "/var/task/inference_proxy/bootstrap"
    # The asset root is lambda_handlers/: the wrapper must be there, executable, and start our runtime.
    script = Path(__file__).resolve().parents[2] / "lambda_handlers" / wrapper.removeprefix("/var/task/")
    assert script.stat().st_mode & 0o111
    assert "-m inference_proxy.runtime" in script.read_text()


def test_resource_policy_admits_only_the_stage_account(assembly):
    (api,) = _resources(assembly, DEV, "AWS::ApiGateway::RestApi").values()
    assert api["Properties"]["Name"] == "search-dev-inference"
    (statement,) = api["Properties"]["Policy"]["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "execute-api:Invoke"
    assert json.dumps(statement["Principal"]).count("111111111111") == 1


def test_post_methods_validate_their_body_against_a_schema(assembly):
    template = assembly.stack(DEV, "Inference").template["Resources"]
    validators = {k: r["Properties"] for k, r in template.items() if r["Type"] == "AWS::ApiGateway::RequestValidator"}
    models = {k: r["Properties"] for k, r in template.items() if r["Type"] == "AWS::ApiGateway::Model"}
    assert {m["Name"] for m in models.values()} == {"ChatCompletionRequest", "PredictRequest"}
    posts = [
        m["Properties"]
        for m in _resources(assembly, DEV, "AWS::ApiGateway::Method").values()
        if m["Properties"]["HttpMethod"] == "POST"
    ]
    assert len(posts) == 2
    for method in posts:
        validator = validators[method["RequestValidatorId"]["Ref"]]
        assert validator["ValidateRequestBody"] is True
        (model_ref,) = method["RequestModels"].values()
        assert models[model_ref["Ref"]]["Schema"]["required"]


def test_stage_is_throttled_traced_and_access_logged_to_an_encrypted_group(assembly):
    template = assembly.template(DEV, "Inference")
    (stage,) = _resources(assembly, DEV, "AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == "api"
    assert props["TracingEnabled"] is True
    (settings,) = props["MethodSettings"]
    assert settings["ThrottlingRateLimit"] > 0 and settings["ThrottlingBurstLimit"] > 0
    (log_group_ref,) = [p for p in props["AccessLogSetting"]["DestinationArn"]["Fn::Join"][1] if isinstance(p, dict)]
    log_group_id = log_group_ref["Ref"]
    assert json.loads(props["AccessLogSetting"]["Format"])["requestId"] == "$context.requestId"
    access_logs = assembly.stack(DEV, "Inference").template["Resources"][log_group_id]["Properties"]
    assert "KmsKeyId" in access_logs and access_logs["RetentionInDays"] == 30
    template.resource_count_is("AWS::WAFv2::WebACLAssociation", 1)


def test_stack_outputs_the_openai_base_url(assembly):
    outputs = assembly.stack(DEV, "Inference").template["Outputs"]
    (base_url,) = [o for o in outputs.values() if "OpenAI" in o.get("Description", "")]
    parts = base_url["Value"]["Fn::Join"][1]
    assert parts[0] == "https://" and parts[-1] == "/v1"


# --- proxy ----------------------------------------------------------------------------------------------------


def test_proxy_function_runtime_layer_and_environment(assembly):
    (function,) = _resources(assembly, DEV, "AWS::Lambda::Function").values()
    props = function["Properties"]
    assert props["FunctionName"] == "search-dev-inference-proxy"
    assert props["Handler"] == "inference_proxy.handler.lambda_handler"
    assert props["Architectures"] == ["arm64"] and props["Runtime"].startswith("python3.")
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Timeout"] <= 29
    (layer,) = props["Layers"]
    assert layer.startswith("arn:aws:lambda:eu-west-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-")
    env = props["Environment"]["Variables"]
    assert env["TEAM"] == "search" and env["STAGE"] == "dev"
    assert json.loads(env["ENDPOINTS"]) == {
        "assistant": {"endpoint_name": "search-dev-assistant", "kind": "llm"},
        "sentiment": {"endpoint_name": "search-dev-sentiment", "kind": "classifier"},
        # The LoRA endpoint and its adapters: model names of their own, each invoking its component.
        "chat": {"endpoint_name": "search-dev-chat", "kind": "llm", "inference_component": "search-dev-chat-base"},
        "support-tone": {
            "endpoint_name": "search-dev-chat",
            "kind": "llm",
            "inference_component": "search-dev-chat-support-tone",
        },
        "sql-helper": {
            "endpoint_name": "search-dev-chat",
            "kind": "llm",
            "inference_component": "search-dev-chat-sql-helper",
        },
    }
    assert props["VpcConfig"]["SubnetIds"]


def test_proxy_reserved_concurrency_defaults_to_20_and_a_stage_can_set_it(assembly):
    # search-prod sets proxy_reserved_concurrency: 50 in config/teams.yaml; search-dev keeps the default
    for stage, expected in ((DEV, 20), (PROD, 50)):
        functions = _resources(assembly, stage, "AWS::Lambda::Function").values()
        (proxy,) = [f["Properties"] for f in functions if f["Properties"]["FunctionName"].endswith("-inference-proxy")]
        assert proxy["ReservedConcurrentExecutions"] == expected


def test_proxy_can_invoke_only_this_stages_endpoints(assembly):
    (role_id,) = [
        k
        for k, r in _resources(assembly, DEV, "AWS::IAM::Role").items()
        if "lambda.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
    ]
    policies = [
        p
        for p in _resources(assembly, DEV, "AWS::IAM::ManagedPolicy").values()
        if {"Ref": role_id} in p["Properties"].get("Roles", [])
    ]
    (policy,) = policies
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    sagemaker = {s["Sid"]: s for s in statements if any(a.startswith("sagemaker:") for a in _actions(s))}
    assert sorted(sagemaker) == ["InvokeThisStagesEndpoints", "InvokeThisStagesInferenceComponents"]
    invoke, components = sagemaker["InvokeThisStagesEndpoints"], sagemaker["InvokeThisStagesInferenceComponents"]
    assert sorted(_actions(invoke)) == [
        "sagemaker:DescribeEndpoint",
        "sagemaker:InvokeEndpoint",
        "sagemaker:InvokeEndpointWithResponseStream",
    ]
    assert sorted(_as_list(invoke["Resource"])) == [
        "arn:aws:sagemaker:eu-west-1:111111111111:endpoint/search-dev-assistant",
        "arn:aws:sagemaker:eu-west-1:111111111111:endpoint/search-dev-chat",
        "arn:aws:sagemaker:eu-west-1:111111111111:endpoint/search-dev-sentiment",
    ]
    # The LoRA endpoint's components by name: its base and every declared adapter, deployed yet or not.
    assert sorted(_actions(components)) == [
        "sagemaker:DescribeInferenceComponent",
        "sagemaker:InvokeEndpoint",
        "sagemaker:InvokeEndpointWithResponseStream",
    ]
    assert sorted(_as_list(components["Resource"])) == [
        "arn:aws:sagemaker:eu-west-1:111111111111:inference-component/search-dev-chat-base",
        "arn:aws:sagemaker:eu-west-1:111111111111:inference-component/search-dev-chat-sql-helper",
        "arn:aws:sagemaker:eu-west-1:111111111111:inference-component/search-dev-chat-support-tone",
    ]
    # Nothing else than its logs, X-Ray and its VPC network interfaces.
    others = {a.split(":")[0] for s in statements if s not in sagemaker.values() for a in _actions(s)}
    assert others == {"logs", "xray", "ec2"}
    assert not _resources(assembly, DEV, "AWS::IAM::Policy"), "no inline policies"


@pytest.mark.parametrize("stage", [DEV, PROD])
def test_no_sagemaker_action_on_every_resource(assembly, stage):
    for statement in _statements(assembly, stage):
        if any(a.startswith("sagemaker:") for a in _actions(statement)):
            assert "*" not in _as_list(statement["Resource"]), statement


# --- endpoints ------------------------------------------------------------------------------------------------


def test_endpoints_have_stable_names(assembly):
    names = {e["Properties"]["EndpointName"] for e in _resources(assembly, DEV, "AWS::SageMaker::Endpoint").values()}
    assert names == {"search-dev-assistant", "search-dev-chat", "search-dev-sentiment"}
    for config in _resources(assembly, DEV, "AWS::SageMaker::EndpointConfig").values():
        assert "EndpointConfigName" not in config["Properties"]  # named by CloudFormation: swaps without downtime


def _model_of(assembly, stage, endpoint_name):
    resources = assembly.stack(stage, "Inference").template["Resources"]
    (endpoint,) = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::SageMaker::Endpoint" and r["Properties"]["EndpointName"] == endpoint_name
    ]
    config = resources[endpoint["Properties"]["EndpointConfigName"]["Fn::GetAtt"][0]]["Properties"]
    (variant,) = config["ProductionVariants"]
    model = resources[variant["ModelName"]["Fn::GetAtt"][0]]["Properties"]
    return model, config, variant


def test_llm_endpoint_runs_isolated_in_the_vpc_on_lmi_with_vllm(assembly):
    model, config, variant = _model_of(assembly, DEV, "search-dev-assistant")
    assert model["EnableNetworkIsolation"] is True
    assert model["VpcConfig"]["Subnets"] and model["VpcConfig"]["SecurityGroupIds"]
    container = model["PrimaryContainer"]
    assert "djl-inference" in container["Image"]
    assert container["ModelDataUrl"].endswith("/models/assistant/v1/model.tar.gz")
    assert container["Environment"]["OPTION_ROLLING_BATCH"] == "vllm"
    assert variant["VariantName"] == "AllTraffic" and variant["InitialInstanceCount"] == 1
    # ml.g5 has hardware-encrypted NVMe storage: SageMaker refuses a volume KmsKeyId for it.
    assert "KmsKeyId" not in config


def test_model_package_endpoint_references_the_package(assembly):
    model, _, variant = _model_of(assembly, PROD, "search-prod-assistant")
    (container,) = model["Containers"]
    assert (
        container["ModelPackageName"] == "arn:aws:sagemaker:us-east-1:222222222222:model-package/search-prod-models/1"
    )
    assert model["EnableNetworkIsolation"] is True and variant["InitialInstanceCount"] == 2


def test_data_capture_is_sampled_and_encrypted(assembly):
    _, config, _ = _model_of(assembly, DEV, "search-dev-assistant")
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["InitialSamplingPercentage"] == 10
    assert (
        capture["DestinationS3Uri"]
        == "s3://search-dev-artifacts-111111111111-eu-west-1/data-capture/search-dev-assistant/"
    )
    assert "KmsKeyId" in capture


def test_serverless_classifier(assembly):
    model, config, variant = _model_of(assembly, DEV, "search-dev-sentiment")
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 5}
    assert "InstanceType" not in variant and "KmsKeyId" not in config and "DataCaptureConfig" not in config
    assert "huggingface-pytorch-inference" in model["PrimaryContainer"]["Image"]
    assert model["PrimaryContainer"]["Environment"] == {"HF_TASK": "text-classification"}


def test_volume_key_only_where_the_instance_type_allows_it():
    from stacks.components.endpoints import has_instance_storage

    assert has_instance_storage("ml.g5.xlarge") and has_instance_storage("ml.m5d.large")
    assert has_instance_storage("ml.p4d.24xlarge")
    assert not has_instance_storage("ml.m5.xlarge") and not has_instance_storage("ml.c7i.2xlarge")


@pytest.mark.parametrize(("stage", "minimum", "maximum"), [(DEV, 1, 2), (PROD, 2, 6)])
def test_autoscaling_on_invocations_per_instance(assembly, stage, minimum, maximum):
    (target,) = _by_path(assembly, stage, "AWS::ApplicationAutoScaling::ScalableTarget", "EndpointAssistant").values()
    props = target["Properties"]
    assert props["ResourceId"] == f"endpoint/{stage}-assistant/variant/AllTraffic"
    assert (props["MinCapacity"], props["MaxCapacity"]) == (minimum, maximum)
    (policy,) = _by_path(assembly, stage, "AWS::ApplicationAutoScaling::ScalingPolicy", "EndpointAssistant").values()
    tracking = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert tracking["TargetValue"] == 60
    assert "aws-service-role" in json.dumps(props["RoleARN"])


def test_dev_endpoint_scales_down_out_of_hours_and_prod_does_not(assembly):
    (dev,) = _by_path(assembly, DEV, "AWS::ApplicationAutoScaling::ScalableTarget", "EndpointAssistant").values()
    actions = {a["ScheduledActionName"]: a for a in dev["Properties"]["ScheduledActions"]}
    down = next(a for name, a in actions.items() if "Down" in name)
    up = next(a for name, a in actions.items() if "Up" in name)
    assert down["Schedule"] == "cron(0 19 ? * MON-FRI *)"
    assert down["ScalableTargetAction"] == {"MinCapacity": 1, "MaxCapacity": 1}
    assert up["Schedule"] == "cron(0 8 ? * MON-FRI *)"
    assert up["ScalableTargetAction"] == {"MinCapacity": 1, "MaxCapacity": 2}
    (prod,) = _resources(assembly, PROD, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    assert "ScheduledActions" not in prod["Properties"]


# --- batch inference ------------------------------------------------------------------------------------------


def _definition(assembly, stage):
    (machine,) = _resources(assembly, stage, "AWS::StepFunctions::StateMachine").values()
    props = machine["Properties"]
    body = props["DefinitionString"]
    text = body if isinstance(body, str) else "".join(p if isinstance(p, str) else "REF" for p in body["Fn::Join"][1])
    return props, json.loads(text)


def test_batch_infer_state_machine_is_named_logged_and_traced(assembly):
    props, _ = _definition(assembly, DEV)
    assert props["StateMachineName"] == "search-dev-BatchInfer"
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"


def test_batch_infer_runs_an_encrypted_line_split_transform_job(assembly):
    _, definition = _definition(assembly, DEV)
    states = definition["States"]
    transforms = {
        name: s for name, s in states.items() if s.get("Resource", "").endswith("sagemaker:createTransformJob.sync")
    }
    assert len(transforms) == 2
    for state in transforms.values():
        params = state["Parameters"]
        assert params["TransformInput"]["SplitType"] == "Line"
        # one line, one request: a MultiRecord batch of JSONL lines is no JSON body a serving container decodes
        assert params["BatchStrategy"] == "SingleRecord"
        assert params["TransformInput"]["ContentType"] == params["TransformOutput"]["Accept"] == "application/json"
        assert params["TransformOutput"]["KmsKeyId"]
        assert params["TransformOutput"]["AssembleWith"] == "Line"
        assert state["Catch"][0]["Next"] == "CreatedModelAfterFailure"
        assert state["Next"] == "CreatedModelAfterSuccess"
    assert "VolumeKmsKeyId" in transforms["TransformJob"]["Parameters"]["TransformResources"]
    # Every failure notifies and ends in a Fail state that carries the cause.
    assert states["NotifyFailure"]["Next"] == "Failed"
    assert states["Failed"] == {"Type": "Fail", "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"}


def test_batch_infer_refuses_input_outside_the_team_buckets(assembly):
    _, definition = _definition(assembly, DEV)
    validate = json.dumps(definition["States"]["Validate"])
    assert "s3://search-dev-data-111111111111-eu-west-1/batch/input/*" in validate
    assert "s3://search-dev-data-111111111111-eu-west-1/batch/output/*" in validate
    assert "model-package/search-dev-models/*" in validate
    assert definition["States"]["Validate"]["Default"] == "InvalidInput"


def test_batch_infer_deletes_the_model_it_created_whatever_the_outcome(assembly):
    _, definition = _definition(assembly, DEV)
    states = definition["States"]
    assert states["UseCreatedModel"]["Parameters"]["created"] is True
    assert states["UseExistingModel"]["Parameters"]["created"] is False
    for outcome, notify in (("Success", "NotifySuccess"), ("Failure", "NotifyFailure")):
        choice = states[f"CreatedModelAfter{outcome}"]
        assert choice["Choices"] == [
            {"Variable": "$.job.created", "BooleanEquals": True, "Next": f"DeleteCreatedModelAfter{outcome}"}
        ]
        assert choice["Default"] == notify  # a model the caller named is never deleted
        delete = states[f"DeleteCreatedModelAfter{outcome}"]
        assert delete["Resource"].endswith(":states:::aws-sdk:sagemaker:deleteModel")
        assert delete["Parameters"] == {"ModelName.$": "$.job.model"}
        # a failed delete is recorded beside the result and never changes the outcome reported
        assert delete["Next"] == notify
        assert delete["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.cleanup_error", "Next": notify}]
    # The models it creates carry the tag its role needs to delete them; nothing else can be deleted.
    for name in ("CreateModelFromPackage", "CreateModelFromArtifact"):
        assert states[name]["Parameters"]["Tags"] == [
            {"Key": "finetune-stack:created-by", "Value": "search-dev-BatchInfer"},
            {"Key": "team", "Value": "search"},
            {"Key": "stage", "Value": "dev"},
        ]
    statements = [
        st
        for policy in _resources(assembly, DEV, "AWS::IAM::ManagedPolicy").values()
        for st in policy["Properties"]["PolicyDocument"]["Statement"]
        if "sagemaker:DeleteModel" in json.dumps(st.get("Action"))
    ]
    assert len(statements) == 1
    assert statements[0]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/finetune-stack:created-by": "search-dev-BatchInfer"}
    }


# --- inference components (a base LLM and its LoRA adapters on one endpoint) -----------------------------------


def _by_path(assembly, stage, resource_type, path_part):
    """Resources whose logical id starts with the construct path `path_part` (e.g. EndpointChat, then a child)."""
    prefix = path_part.replace("/", "")
    return {k: r for k, r in _resources(assembly, stage, resource_type).items() if k.startswith(prefix)}


def test_lora_endpoint_config_hosts_components_not_a_model(assembly):
    (config,) = _by_path(assembly, DEV, "AWS::SageMaker::EndpointConfig", "/EndpointChat/").values()
    properties = config["Properties"]
    (variant,) = properties["ProductionVariants"]
    # No model: the components bring their containers; role, VPC and isolation are the endpoint config's.
    assert "ModelName" not in variant
    assert properties["ExecutionRoleArn"]["Fn::GetAtt"][0].startswith("ModelExecutionRole")
    assert properties["EnableNetworkIsolation"] is True
    assert set(properties["VpcConfig"]) == {"SecurityGroupIds", "Subnets"}
    assert variant["InstanceType"] == "ml.g5.xlarge" and variant["InitialInstanceCount"] == 1
    # min_copies 0 on dev: SageMaker may release every instance once no copy runs.
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 2}
    # No model, so no SageMaker::Model for this endpoint either.
    assert not _by_path(assembly, DEV, "AWS::SageMaker::Model", "/EndpointChat/")


def test_base_component_runs_lmi_with_lora_enabled(assembly):
    components = _resources(assembly, DEV, "AWS::SageMaker::InferenceComponent")
    (base,) = [
        c["Properties"]
        for c in components.values()
        if c["Properties"]["InferenceComponentName"] == "search-dev-chat-base"
    ]
    assert base["EndpointName"] == {
        "Fn::GetAtt": [
            next(iter(_by_path(assembly, DEV, "AWS::SageMaker::Endpoint", "/EndpointChat/"))),
            "EndpointName",
        ]
    }
    assert base["VariantName"] == "AllTraffic"
    container = base["Specification"]["Container"]
    assert "djl-inference" in container["Image"] and "lmi" in container["Image"]
    assert container["ArtifactUrl"] == (
        "s3://search-dev-artifacts-111111111111-eu-west-1/models/base/smollm2-135m-instruct/model.tar.gz"
    )
    environment = container["Environment"]
    assert environment["OPTION_ROLLING_BATCH"] == "vllm"
    assert environment["OPTION_ENABLE_LORA"] == "true"
    assert environment["OPTION_MAX_LORAS"] == "4" and environment["OPTION_MAX_LORA_RANK"] == "16"
    assert base["Specification"]["ComputeResourceRequirements"] == {
        "NumberOfAcceleratorDevicesRequired": 1,
        "MinMemoryRequiredInMb": 8192,
    }
    assert base["RuntimeConfig"] == {"CopyCount": 1}


def test_one_adapter_component_per_adapter_with_an_artifact(assembly):
    components = _resources(assembly, DEV, "AWS::SageMaker::InferenceComponent")
    adapters = {
        c["Properties"]["InferenceComponentName"]: c
        for c in components.values()
        if "BaseInferenceComponentName" in c["Properties"]["Specification"]
    }
    # sql-helper has no artifact yet: the FineTune pipeline creates its component on its first deployment.
    assert sorted(adapters) == ["search-dev-chat-support-tone"]
    adapter = adapters["search-dev-chat-support-tone"]
    assert adapter["Properties"]["Specification"] == {
        "BaseInferenceComponentName": "search-dev-chat-base",
        "Container": {
            "ArtifactUrl": "s3://search-dev-artifacts-111111111111-eu-west-1/adapters/chat/support-tone/"
            "v1/adapter.tar.gz"
        },
    }
    # Created after its base (named by literal, so the dependency is explicit); no compute or copies of its own.
    (base_id,) = [
        k for k, c in components.items() if c["Properties"]["InferenceComponentName"] == "search-dev-chat-base"
    ]
    assert adapter["DependsOn"] == [base_id]
    assert "RuntimeConfig" not in adapter["Properties"] and "VariantName" not in adapter["Properties"]
    assert not _resources(assembly, PROD, "AWS::SageMaker::InferenceComponent"), "prod declares no LoRA endpoint"


def test_dev_base_component_scales_to_zero_and_back(assembly):
    ((target_id, target),) = _by_path(
        assembly, DEV, "AWS::ApplicationAutoScaling::ScalableTarget", "/EndpointChat/"
    ).items()
    assert target["Properties"]["ResourceId"] == "inference-component/search-dev-chat-base"
    assert target["Properties"]["ScalableDimension"] == "sagemaker:inference-component:DesiredCopyCount"
    assert (target["Properties"]["MinCapacity"], target["Properties"]["MaxCapacity"]) == (0, 2)
    policies = {
        p["Properties"]["PolicyType"]: p["Properties"]
        for p in _by_path(assembly, DEV, "AWS::ApplicationAutoScaling::ScalingPolicy", "/EndpointChat/").values()
    }
    assert policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"][
        "PredefinedMetricSpecification"
    ] == {"PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"}
    step = policies["StepScaling"]
    assert step["ScalingTargetId"] == {"Ref": target_id}
    assert step["StepScalingPolicyConfiguration"]["StepAdjustments"] == [
        {"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}
    ]
    (alarm,) = _by_path(assembly, DEV, "AWS::CloudWatch::Alarm", "/EndpointChat/NoCapacityAlarm").values()
    (step_id,) = [
        k
        for k, p in _by_path(assembly, DEV, "AWS::ApplicationAutoScaling::ScalingPolicy", "/EndpointChat/").items()
        if p["Properties"]["PolicyType"] == "StepScaling"
    ]
    assert alarm["Properties"]["AlarmActions"] == [{"Ref": step_id}]
    assert alarm["Properties"]["MetricName"] == "NoCapacityInvocationFailures"
    assert alarm["Properties"]["Dimensions"] == [{"Name": "InferenceComponentName", "Value": "search-dev-chat-base"}]


def test_model_role_reads_the_base_and_this_endpoints_adapters_only(assembly):
    (read,) = [s for s in _statements(assembly, DEV) if s.get("Sid") == "ReadModelArtifacts"]
    resources = _as_list(read["Resource"])
    bucket = "arn:aws:s3:::search-dev-artifacts-111111111111-eu-west-1"
    assert f"{bucket}/models/base/smollm2-135m-instruct/model.tar.gz" in resources
    assert f"{bucket}/adapters/chat/support-tone/v1/adapter.tar.gz" in resources
    assert f"{bucket}/adapters/chat/*" in resources
    assert not any(r.endswith(("/adapters/*", f"{bucket}/*")) for r in resources), resources
    (logs,) = [s for s in _statements(assembly, DEV) if s.get("Sid") == "EndpointLogs"]
    assert "arn:aws:logs:eu-west-1:111111111111:log-group:/aws/sagemaker/InferenceComponents/search-dev-*" in _as_list(
        logs["Resource"]
    )


def test_a_stage_that_keeps_copies_has_no_scale_from_zero_and_starts_with_its_minimum(tmp_path):
    """min_copies >= 1 (prod-like): no NoCapacity alarm or step policy, and instances never scale to zero."""
    from app import build_app
    from scripts.cloud_assembly import read_assembly
    from tests.conftest import EXAMPLE_CONFIG

    config = tmp_path / "teams.yaml"
    text = EXAMPLE_CONFIG.read_text()
    assert "              min_copies: 0\n" in text
    indent = " " * 14
    config.write_text(
        text.replace(f"{indent}min_copies: 0\n", f"{indent}min_copies: 2\n{indent}max_copies: 3\n", 1).replace(
            f"{indent}max_copies: 2\n", "", 1
        )
    )
    outdir = tmp_path / "cdk.out"
    build_app(config, teams="search", stage_names="dev", outdir=str(outdir)).synth()
    stack = read_assembly(outdir).stack(DEV, "Inference")

    (base,) = [
        c["Properties"]
        for c in stack.resources_of_type("AWS::SageMaker::InferenceComponent").values()
        if c["Properties"]["InferenceComponentName"] == "search-dev-chat-base"
    ]
    assert base["RuntimeConfig"] == {"CopyCount": 2}
    (target,) = [
        t["Properties"]
        for k, t in stack.resources_of_type("AWS::ApplicationAutoScaling::ScalableTarget").items()
        if k.startswith("EndpointChat")
    ]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 3)
    policies = [
        p["Properties"]["PolicyType"]
        for k, p in stack.resources_of_type("AWS::ApplicationAutoScaling::ScalingPolicy").items()
        if k.startswith("EndpointChat")
    ]
    assert policies == ["TargetTrackingScaling"]
    assert not [k for k in stack.resources_of_type("AWS::CloudWatch::Alarm") if k.startswith("EndpointChat")]
    (config_resource,) = [
        c["Properties"]
        for k, c in stack.resources_of_type("AWS::SageMaker::EndpointConfig").items()
        if k.startswith("EndpointChat")
    ]
    assert config_resource["ProductionVariants"][0]["ManagedInstanceScaling"]["MinInstanceCount"] == 1
