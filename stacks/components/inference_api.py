"""The inference proxy function and the authenticated REST API in front of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, CfnResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from lambda_handlers.inference_proxy import REQUIRED_IAM_ACTIONS, lambda_environment
from stacks import naming
from stacks.components.acknowledgements import acknowledge
from stacks.components.cfn import cfn_resource
from stacks.components.endpoints import partition_of
from stacks.settings import EndpointSpec

LAMBDA_HANDLERS = Path(__file__).resolve().parents[2] / "lambda_handlers"

POWERTOOLS_LAYER_ACCOUNT = "017000801446"
"""The AWS account that publishes the Powertools for AWS Lambda (Python) layers in every commercial region."""
POWERTOOLS_LAYER_VERSION = 27
"""Pinned layer version of AWSLambdaPowertoolsPythonV3-python314-arm64 (Powertools v3, pydantic v2 included)."""
PROXY_RUNTIME = lambda_.Runtime.PYTHON_3_14

STREAMING_BOOTSTRAP = "/var/task/inference_proxy/bootstrap"
"""The exec wrapper that starts the streaming runtime client (the asset's `inference_proxy/bootstrap`)."""

API_STAGE_NAME = "api"
"""The REST API's one stage: the base URL is `https://<id>.execute-api.<region>.amazonaws.com/api/`."""

PROXY_TIMEOUT = Duration.seconds(29)
"""API Gateway ends a REST integration after 29 s; the proxy gives up on the model earlier (its read timeout)."""
"""Concurrent proxy invocations reserved (and capped) per team stage: one team cannot starve the account."""
STAGE_RATE_LIMIT = 50
STAGE_BURST_LIMIT = 100

# JSON schemas (draft 4, as API Gateway models take them) for the two POST bodies. They reject what is
# structurally wrong before the function runs; the proxy's own models give the precise messages.
CHAT_COMPLETIONS_SCHEMA = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "title": "ChatCompletionRequest",
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": 256},
        "messages": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1024,
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
                    # null: an assistant message that only carries tool_calls.
                    "content": {"type": ["string", "array", "null"]},
                    "name": {"type": "string", "maxLength": 64},
                },
            },
        },
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 131072},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 131072},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "stop": {"type": ["string", "array"], "items": {"type": "string"}, "maxItems": 4},
        "stream": {"type": "boolean"},
        "tools": {"type": "array", "maxItems": 128},
        "n": {"type": "integer", "minimum": 1, "maximum": 8},
    },
}
PREDICT_SCHEMA = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "title": "PredictRequest",
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "inputs": {"type": ["string", "array"], "items": {"type": "string"}, "minItems": 1},
    },
}

# API Gateway's own refusals in the proxy's error shape (OpenAI's {"error": {"message", "type", "param", "code"}}),
# so a caller sees one error format whichever layer refuses the request. Each entry: type, status, OpenAI error
# type, code, message.
# `$context.error.messageString` is API Gateway's message already quoted as a JSON string.
_GATEWAY_MESSAGE = "$context.error.messageString"
GATEWAY_ERRORS: dict[str, tuple[apigw.ResponseType, str | None, str, str, str]] = {
    "BadRequestBody": (
        apigw.ResponseType.BAD_REQUEST_BODY,
        "400",
        "invalid_request_error",
        "invalid_request",
        '"The request body does not match the JSON schema of this route."',
    ),
    "AccessDenied": (apigw.ResponseType.ACCESS_DENIED, "403", "permission_error", "access_denied", _GATEWAY_MESSAGE),
    "MissingAuthenticationToken": (
        apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN,
        "403",
        "permission_error",
        "missing_authentication",
        '"Missing or unsigned request, or no such route."',
    ),
    "InvalidSignature": (
        apigw.ResponseType.INVALID_SIGNATURE,
        "403",
        "permission_error",
        "invalid_signature",
        _GATEWAY_MESSAGE,
    ),
    "RequestTooLarge": (
        apigw.ResponseType.REQUEST_TOO_LARGE,
        "413",
        "invalid_request_error",
        "request_too_large",
        _GATEWAY_MESSAGE,
    ),
    "Throttled": (apigw.ResponseType.THROTTLED, "429", "rate_limit_error", "rate_limit_exceeded", _GATEWAY_MESSAGE),
    "QuotaExceeded": (apigw.ResponseType.QUOTA_EXCEEDED, "429", "rate_limit_error", "quota_exceeded", _GATEWAY_MESSAGE),
    "IntegrationTimeout": (apigw.ResponseType.INTEGRATION_TIMEOUT, "504", "server_error", "timeout", _GATEWAY_MESSAGE),
    "Default5xx": (apigw.ResponseType.DEFAULT_5_XX, None, "server_error", "internal_error", _GATEWAY_MESSAGE),
}


def powertools_layer_arn(partition: str, region: str) -> str:
    return (
        f"arn:{partition}:lambda:{region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-python314-arm64:{POWERTOOLS_LAYER_VERSION}"
    )


class InferenceProxy(Construct):
    """The inference-proxy function: arm64, Powertools layer, in the team VPC, allowed to call this stage's
    endpoints only (`sagemaker:InvokeEndpoint` and `DescribeEndpoint` on each endpoint's ARN)."""

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        qualified_name: str,
        team: str,
        stage_name: str,
        endpoints: tuple[EndpointSpec, ...],
        key: kms.IKey,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        vpc_cidr: str,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        reserved_concurrency: int,
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        self.function_name = naming.inference_proxy_function(qualified_name)
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            log_group_name=f"/aws/lambda/{self.function_name}",
            encryption_key=key,
            retention=log_retention,
            removal_policy=removal_policy,
        )
        self.endpoint_arns = [
            f"arn:{partition_of(stack.region)}:sagemaker:{stack.region}:{stack.account}:endpoint/"
            f"{naming.endpoint(qualified_name, spec.name).lower()}"
            for spec in endpoints
        ]
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{qualified_name}: inference proxy (invoke this stage's endpoints)",
        )
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description=f"{qualified_name}: what the inference proxy may do",
            roles=[self.role],
            statements=[
                iam.PolicyStatement(
                    sid="InvokeThisStagesEndpoints", actions=list(REQUIRED_IAM_ACTIONS), resources=self.endpoint_arns
                ),
                iam.PolicyStatement(
                    sid="WriteOwnLogs",
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[self.log_group.log_group_arn],
                ),
                iam.PolicyStatement(
                    sid="XRayTraces", actions=["xray:PutTraceSegments", "xray:PutTelemetryRecords"], resources=["*"]
                ),
                iam.PolicyStatement(
                    sid="VpcNetworkInterfaces",
                    actions=[
                        "ec2:CreateNetworkInterface",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSubnets",
                        "ec2:DeleteNetworkInterface",
                        "ec2:AssignPrivateIpAddresses",
                        "ec2:UnassignPrivateIpAddresses",
                    ],
                    resources=["*"],
                ),
            ],
        )
        acknowledge(
            self.policy,
            {
                "AwsSolutions-IAM5[Resource::*]": (
                    "X-Ray PutTraceSegments/PutTelemetryRecords and the EC2 network-interface actions Lambda needs to "
                    "attach the function to the team VPC support no resource-level permissions (IAM service "
                    "authorization reference); the SageMaker grant is on this stage's endpoint ARNs only."
                ),
            },
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            allow_all_outbound=False,
            description=f"{qualified_name}: inference proxy, HTTPS to the SageMaker endpoints of the VPC only",
        )
        self.security_group.add_egress_rule(
            ec2.Peer.ipv4(vpc_cidr), ec2.Port.tcp(443), "HTTPS to the VPC interface endpoints"
        )
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=self.function_name,
            description=f"{qualified_name}: OpenAI-compatible proxy over the stage's SageMaker endpoints",
            runtime=PROXY_RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            code=lambda_.Code.from_asset(str(LAMBDA_HANDLERS), exclude=["**/__pycache__", "**/*.pyc"]),
            # Unused by the runtime client that AWS_LAMBDA_EXEC_WRAPPER starts (it calls handler.stream_handler),
            # but the buffered entry point of the same module, for a test invoke from the console.
            handler="inference_proxy.handler.lambda_handler",
            layers=[
                lambda_.LayerVersion.from_layer_version_arn(
                    self, "PowertoolsLayer", powertools_layer_arn(partition_of(stack.region), stack.region)
                )
            ],
            environment={
                **lambda_environment(
                    team=team, stage=stage_name, endpoints={spec.name: spec.kind for spec in endpoints}
                ),
                "POWERTOOLS_SERVICE_NAME": "inference-proxy",
                "POWERTOOLS_METRICS_NAMESPACE": naming.METRICS_NAMESPACE,
                # The managed Python runtime buffers responses; this wrapper runs the proxy's own runtime
                # client instead, which answers in the Runtime API's streaming mode (README: DESIGN, streaming).
                "AWS_LAMBDA_EXEC_WRAPPER": STREAMING_BOOTSTRAP,
            },
            memory_size=512,
            timeout=PROXY_TIMEOUT,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            # Every permission is in the managed policy above: CDK adds nothing inline.
            role=self.role.without_policy_updates(),
            reserved_concurrent_executions=reserved_concurrency,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
        )
        self.function.node.add_dependency(self.policy)
        ignore_redundant_role_dependency(cfn_resource(self.function, lambda_.CfnFunction))
        dlq_reason = (
            "API Gateway invokes the proxy synchronously and returns its error to the caller; a dead-letter "
            "queue only receives failed asynchronous invocations, which this function never gets."
        )
        acknowledge(
            self.function,
            {
                "NIST.800.53.R5-LambdaDLQ": dlq_reason,
                "HIPAA.Security-LambdaDLQ": dlq_reason,
            },
        )


class InferenceApi(Construct):
    """A regional REST API (SigV4/IAM on every method, this account only) in front of the proxy function.

    Routes: POST /v1/chat/completions, GET /v1/models, POST /v1/models/{name}/predict. Bodies are validated
    against JSON schemas, the stage is throttled, traced with X-Ray and access-logged as JSON to a KMS-encrypted
    log group, and AWS WAF guards it. `api_key_clients` adds an API key per client name and a usage plan.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        qualified_name: str,
        function: lambda_.IFunction,
        key: kms.IKey,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        api_key_clients: tuple[str, ...] = (),
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        self.access_log_group = logs.LogGroup(
            self,
            "AccessLogs",
            log_group_name=f"/finetune-stack/{qualified_name}/inference-api-access",
            encryption_key=key,
            retention=log_retention,
            removal_policy=removal_policy,
        )
        self.api_name = naming.inference_api(qualified_name)
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=self.api_name,
            description=f"{qualified_name}: inference API (OpenAI-compatible chat completions, classifiers)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=False,
            policy=iam.PolicyDocument(
                statements=[
                    iam.PolicyStatement(
                        sid="InvokeFromThisAccountOnly",
                        principals=[iam.AccountPrincipal(stack.account)],
                        actions=["execute-api:Invoke"],
                        resources=["execute-api:/*"],
                    )
                ]
            ),
            default_method_options=apigw.MethodOptions(
                authorization_type=apigw.AuthorizationType.IAM, api_key_required=bool(api_key_clients)
            ),
            deploy_options=apigw.StageOptions(
                stage_name=API_STAGE_NAME,
                throttling_rate_limit=STAGE_RATE_LIMIT,
                throttling_burst_limit=STAGE_BURST_LIMIT,
                tracing_enabled=True,
                metrics_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(self.access_log_group),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
            ),
        )
        for construct_id, (response_type, status, error_type, code, message) in GATEWAY_ERRORS.items():
            self.api.add_gateway_response(
                construct_id,
                type=response_type,
                status_code=status,
                templates={
                    "application/json": f'{{"error": {{"message": {message}, "type": "{error_type}", '
                    f'"param": null, "code": "{code}"}}}}'
                },
            )

        # STREAM: API Gateway invokes the function with InvokeWithResponseStream (the `response-streaming-
        # invocations` URI) and relays bytes as the function writes them, so `stream: true` reaches the caller
        # chunk by chunk. Every route uses it: the function answers every invocation in streaming mode (its own
        # runtime client, inference_proxy/runtime.py), a buffered answer being one prelude and one body write.
        integration = apigw.LambdaIntegration(
            function,
            proxy=True,
            timeout=PROXY_TIMEOUT,
            allow_test_invoke=False,
            response_transfer_mode=apigw.ResponseTransferMode.STREAM,
        )
        body_validator = self.api.add_request_validator(
            "BodyValidator",
            request_validator_name="validate-body",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        params_validator = self.api.add_request_validator(
            "ParametersValidator",
            request_validator_name="validate-parameters",
            validate_request_body=False,
            validate_request_parameters=True,
        )
        chat_model = self.api.add_model(
            "ChatCompletionRequest",
            content_type="application/json",
            model_name="ChatCompletionRequest",
            schema=_schema(CHAT_COMPLETIONS_SCHEMA),
        )
        predict_model = self.api.add_model(
            "PredictRequest",
            content_type="application/json",
            model_name="PredictRequest",
            schema=_schema(PREDICT_SCHEMA),
        )

        v1 = self.api.root.add_resource("v1")
        chat = (
            v1.add_resource("chat")
            .add_resource("completions")
            .add_method(
                "POST", integration, request_validator=body_validator, request_models={"application/json": chat_model}
            )
        )
        models = v1.add_resource("models")
        list_models = models.add_method("GET", integration, request_validator=params_validator)
        model = models.add_resource("{name}")
        retrieve_model = model.add_method(
            "GET",
            integration,
            request_validator=params_validator,
            request_parameters={"method.request.path.name": True},
        )
        predict = model.add_resource("predict").add_method(
            "POST",
            integration,
            request_validator=body_validator,
            request_parameters={"method.request.path.name": True},
            request_models={"application/json": predict_model},
        )

        self.methods = [chat, list_models, retrieve_model, predict]
        for method in self.methods:
            acknowledge(
                method,
                {
                    "AwsSolutions-COG4": (
                        "Callers are applications and people of the team's AWS account, authenticated with SigV4 (IAM "
                        "authorization on every method) and admitted by the resource policy; there is no Cognito user "
                        "pool in this platform, and IAM identities carry the audit trail in CloudTrail."
                    )
                },
            )

        self.stage = self.api.deployment_stage
        cache_reason = (
            "Responses are model outputs for one caller's prompt; caching them would serve one caller's "
            "completion to another and defeat sampling. No cache cluster exists to encrypt."
        )
        cert_reason = (
            "The only integration is the proxy Lambda (AWS_PROXY), invoked through the Lambda service "
            "with IAM; backend client certificates authenticate HTTP integrations only."
        )
        execution_log_reason = (
            "Access logs (JSON, KMS-encrypted) record every request and X-Ray traces every call. "
            "Execution logging needs the account-wide API Gateway CloudWatch role, an account "
            "singleton this per-team stack must not own; it would also log request bodies."
        )
        acknowledge(
            self.stage,
            {
                "AwsSolutions-APIG6": execution_log_reason,
                "NIST.800.53.R5-APIGWExecutionLoggingEnabled": execution_log_reason,
                "HIPAA.Security-APIGWExecutionLoggingEnabled": execution_log_reason,
                "NIST.800.53.R5-APIGWCacheEnabledAndEncrypted": cache_reason,
                "HIPAA.Security-APIGWCacheEnabledAndEncrypted": cache_reason,
                "NIST.800.53.R5-APIGWSSLEnabled": cert_reason,
                "HIPAA.Security-APIGWSSLEnabled": cert_reason,
            },
        )

        self.web_acl = _web_acl(self, qualified_name)
        # WAF logs only to log groups named aws-waf-logs-*; the team key encrypts it like every other log group.
        self.waf_log_group = logs.LogGroup(
            self,
            "WafLogs",
            log_group_name=f"aws-waf-logs-{qualified_name}-inference-api",
            encryption_key=key,
            retention=log_retention,
            removal_policy=removal_policy,
        )
        wafv2.CfnLoggingConfiguration(
            self,
            "WafLogging",
            resource_arn=self.web_acl.attr_arn,
            log_destination_configs=[
                f"arn:{partition_of(stack.region)}:logs:{stack.region}:{stack.account}:log-group:"
                f"{self.waf_log_group.log_group_name}"
            ],
        )
        wafv2.CfnWebACLAssociation(
            self, "WebAclAssociation", resource_arn=self.stage.stage_arn, web_acl_arn=self.web_acl.attr_arn
        )

        if api_key_clients:
            plan = self.api.add_usage_plan(
                "UsagePlan",
                name=f"{qualified_name}-inference",
                throttle=apigw.ThrottleSettings(rate_limit=STAGE_RATE_LIMIT, burst_limit=STAGE_BURST_LIMIT),
                api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.stage)],
            )
            for client in api_key_clients:
                plan.add_api_key(
                    self.api.add_api_key(
                        f"ApiKey{client.title().replace('-', '')}", api_key_name=f"{qualified_name}-{client}"
                    )
                )

        self.url_output = CfnOutput(
            self,
            "BaseUrl",
            value=f"{self.api.url}v1",
            description="OpenAI-compatible base URL of the inference API (SigV4-signed)",
        )


def ignore_redundant_role_dependency(resource: CfnResource) -> None:
    """The CDK adds a DependsOn on a given role that the GetAtt of the same role already implies (cfn-lint
    W3005); harmless and not ours to change, so cfn-lint is told so on exactly that resource."""
    resource.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})


def _schema(document: dict[str, Any]) -> apigw.JsonSchema:
    """A JSON schema dict as the CDK's JsonSchema (keys renamed to its properties)."""
    renames = {
        "$schema": "schema",
        "minLength": "min_length",
        "maxLength": "max_length",
        "minItems": "min_items",
        "maxItems": "max_items",
    }
    kwargs: dict[str, Any] = {}
    for key, value in document.items():
        name = renames.get(key, key)
        if key == "$schema":
            value = apigw.JsonSchemaVersion.DRAFT4
        elif key == "type":
            value = [_TYPES[v] for v in value] if isinstance(value, list) else _TYPES[value]
        elif key == "properties":
            value = {prop: _schema(sub) for prop, sub in value.items()}
        elif key == "items":
            value = _schema(value)
        kwargs[name] = value
    return apigw.JsonSchema(**kwargs)


_TYPES = {
    "object": apigw.JsonSchemaType.OBJECT,
    "array": apigw.JsonSchemaType.ARRAY,
    "string": apigw.JsonSchemaType.STRING,
    "integer": apigw.JsonSchemaType.INTEGER,
    "number": apigw.JsonSchemaType.NUMBER,
    "boolean": apigw.JsonSchemaType.BOOLEAN,
    "null": apigw.JsonSchemaType.NULL,
}


def _web_acl(scope: Construct, qualified_name: str) -> wafv2.CfnWebACL:
    """AWS managed rule groups (common exploits, known bad inputs) and a per-IP rate limit."""

    def visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
        return wafv2.CfnWebACL.VisibilityConfigProperty(
            cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
        )

    def managed(priority: int, name: str, overrides: list[str]) -> wafv2.CfnWebACL.RuleProperty:
        return wafv2.CfnWebACL.RuleProperty(
            name=name,
            priority=priority,
            override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
            statement=wafv2.CfnWebACL.StatementProperty(
                managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                    vendor_name="AWS",
                    name=name,
                    rule_action_overrides=[
                        wafv2.CfnWebACL.RuleActionOverrideProperty(
                            name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
                        )
                        for rule in overrides
                    ]
                    or None,
                )
            ),
            visibility_config=visibility(name),
        )

    return wafv2.CfnWebACL(
        scope,
        "WebAcl",
        name=f"{qualified_name}-inference-api",
        scope="REGIONAL",
        default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
        visibility_config=visibility(f"{qualified_name}-inference-api"),
        rules=[
            # Chat prompts exceed the common rule set's 8 KB body limit by design; the proxy enforces its own limit.
            managed(0, "AWSManagedRulesCommonRuleSet", ["SizeRestrictions_BODY"]),
            managed(1, "AWSManagedRulesKnownBadInputsRuleSet", []),
            wafv2.CfnWebACL.RuleProperty(
                name="RateLimitPerIp",
                priority=2,
                action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(limit=3000, aggregate_key_type="IP")
                ),
                visibility_config=visibility("RateLimitPerIp"),
            ),
        ],
    )
