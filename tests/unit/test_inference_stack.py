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
    sagemaker = [s for s in statements if any(a.startswith("sagemaker:") for a in _actions(s))]
    (invoke,) = sagemaker
    assert sorted(_actions(invoke)) == [
        "sagemaker:DescribeEndpoint",
        "sagemaker:InvokeEndpoint",
        "sagemaker:InvokeEndpointWithResponseStream",
    ]
    assert sorted(_as_list(invoke["Resource"])) == [
        "arn:aws:sagemaker:eu-west-1:111111111111:endpoint/search-dev-assistant",
        "arn:aws:sagemaker:eu-west-1:111111111111:endpoint/search-dev-sentiment",
    ]
    # Nothing else than its logs, X-Ray and its VPC network interfaces.
    others = {a.split(":")[0] for s in statements if s is not invoke for a in _actions(s)}
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
    assert names == {"search-dev-assistant", "search-dev-sentiment"}
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
    (target,) = _resources(assembly, stage, "AWS::ApplicationAutoScaling::ScalableTarget").values()
    props = target["Properties"]
    assert props["ResourceId"] == f"endpoint/{stage}-assistant/variant/AllTraffic"
    assert (props["MinCapacity"], props["MaxCapacity"]) == (minimum, maximum)
    (policy,) = _resources(assembly, stage, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
    tracking = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert tracking["TargetValue"] == 60
    assert "aws-service-role" in json.dumps(props["RoleARN"])


def test_dev_endpoint_scales_down_out_of_hours_and_prod_does_not(assembly):
    (dev,) = _resources(assembly, DEV, "AWS::ApplicationAutoScaling::ScalableTarget").values()
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
