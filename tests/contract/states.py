"""Rendering a synthesized Step Functions definition with a sample execution state, and checking the API calls
it would make against botocore's own service models."""

from __future__ import annotations

import json
import re
import uuid

from botocore.validate import ParamValidator

from scripts.asl_check import resolve_tokens  # noqa: F401  (one resolver for tests and make synth)

CONTEXT = {"Execution": {"Name": "dolly-v1-20261127", "Id": "arn:aws:states:eu-west-1:111111111111:execution:x:y"}}


def _path(expression: str, state: dict):
    root = CONTEXT if expression.startswith("$$") else state
    current = root
    for part in expression.lstrip("$").strip(".").split("."):
        if part:
            current = current[part]
    return current


def next_uuid() -> uuid.UUID:
    """What ``States.UUID()`` returns here: a fixed value, so rendered names are predictable (tests that need
    fresh values per call patch this)."""
    return uuid.UUID(int=0x1A2B3C4D << 96)


def intrinsic(expression: str, state: dict):
    """A small evaluator for the intrinsic functions the definition uses."""
    expression = expression.strip()
    if expression.startswith("$"):
        return _path(expression, state)
    if expression.startswith("'"):
        return expression[1:-1]
    if re.fullmatch(r"-?\d+", expression):
        return int(expression)
    name, inner = re.fullmatch(r"(States\.\w+)\((.*)\)", expression, re.S).groups()
    args, depth, current, quoted = [], 0, "", False
    for char in inner:
        if char == "'" and depth == 0:
            quoted = not quoted
        if char == "," and depth == 0 and not quoted:
            args.append(current)
            current = ""
            continue
        depth += (char == "(") - (char == ")") if not quoted else 0
        current += char
    if current.strip():
        args.append(current)
    values = [intrinsic(a, state) for a in args]
    if name == "States.Format":
        template, *rest = values
        for item in rest:
            template = template.replace("{}", str(item), 1)
        return template
    if name == "States.UUID":
        return str(next_uuid())
    if name == "States.StringSplit":
        return values[0].split(values[1])
    if name == "States.ArrayGetItem":
        return values[0][values[1]]
    if name == "States.MathAdd":
        return values[0] + values[1]
    if name == "States.ArrayContains":
        return values[1] in values[0]
    if name == "States.JsonToString":
        return json.dumps(values[0])
    raise AssertionError(f"unsupported intrinsic {name}")


def render(parameters, state: dict):
    if isinstance(parameters, dict):
        rendered = {}
        for key, value in parameters.items():
            if key.endswith(".$"):
                rendered[key[:-2]] = intrinsic(value, state)
            else:
                rendered[key] = render(value, state)
        return rendered
    if isinstance(parameters, list):
        return [render(v, state) for v in parameters]
    return parameters


def validate_request(sagemaker_model, operation: str, params: dict) -> None:
    shape = sagemaker_model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), f"{operation}: {report.generate_report()}"


_MISSING = object()


def _value(path: str, data: dict):
    try:
        return _path(path, data)
    except (KeyError, IndexError, TypeError):
        return _MISSING


def _string_matches(value: str, pattern: str) -> bool:
    """States Language StringMatches: `*` matches any run of characters, `\\*` a literal star."""
    regex = "".join(
        ".*" if part == "*" else re.escape(part.replace("\\*", "*")) for part in re.split(r"(?<!\\)(\*)", pattern)
    )
    return re.fullmatch(regex, value, re.S) is not None


def rule_holds(rule: dict, data: dict) -> bool:
    """Evaluate one Choice rule of a synthesized definition (the operators the definitions use) on ``data``."""
    if "And" in rule:
        return all(rule_holds(r, data) for r in rule["And"])
    if "Or" in rule:
        return any(rule_holds(r, data) for r in rule["Or"])
    if "Not" in rule:
        return not rule_holds(rule["Not"], data)
    value = _value(rule["Variable"], data)
    ((operator, operand),) = [(k, v) for k, v in rule.items() if k not in ("Variable", "Next")]
    if operator == "IsPresent":
        return (value is not _MISSING) == operand
    if value is _MISSING and operator.startswith("Is"):
        return False  # type tests on an absent field are false (the definitions rely on it)
    if value is _MISSING:
        # A comparison on an absent field is a runtime error in Step Functions; the definitions guard against it.
        raise AssertionError(f"{rule['Variable']} is absent for {operator}")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    checks = {
        "IsString": lambda: isinstance(value, str) == operand,
        "IsNumeric": lambda: numeric == operand,
        "IsBoolean": lambda: isinstance(value, bool) == operand,
        "IsNull": lambda: (value is None) == operand,
        "StringEquals": lambda: isinstance(value, str) and value == operand,
        "StringMatches": lambda: isinstance(value, str) and _string_matches(value, operand),
        "BooleanEquals": lambda: isinstance(value, bool) and value == operand,
        "NumericEquals": lambda: numeric and value == operand,
        "NumericGreaterThanEquals": lambda: numeric and value >= operand,
        "NumericLessThanEquals": lambda: numeric and value <= operand,
        "NumericLessThan": lambda: numeric and value < operand,
        "NumericGreaterThan": lambda: numeric and value > operand,
    }
    if operator not in checks:
        raise AssertionError(f"unsupported Choice operator {operator}")
    return checks[operator]()


def choose(choice_state: dict, data: dict) -> str:
    """The state a Choice state moves to for ``data``: the first rule that holds, else its Default."""
    for rule in choice_state["Choices"]:
        if rule_holds(rule, data):
            return rule["Next"]
    return choice_state["Default"]
