"""CR validation like the API server's: a CRD's openAPIV3Schema checked with jsonschema (Draft 4).

Unknown fields are refused (as `kubectl`'s strict field validation makes kube-apiserver do; a
client that asks for no field validation has them pruned there), except under
x-kubernetes-preserve-unknown-fields. The CEL rules (`x-kubernetes-validations`) at the schema's
root are evaluated with a CEL implementation: transition rules (those naming `oldSelf`) on
updates only, as the API server does. No schema defaults are applied (the real lane,
tests/kube/real_lane.py, shows them).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema

Schema = dict[str, Any]
NESTED = ("properties", "items", "additionalProperties")


def to_jsonschema(schema: Any) -> Any:
    if isinstance(schema, list):
        return [to_jsonschema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: (to_jsonschema(v) if k in ("items", "additionalProperties", "not") else v)
        for k, v in schema.items()
    }
    if "properties" in out:
        out["properties"] = {k: to_jsonschema(v) for k, v in out["properties"].items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if (
        out.get("type") == "object"
        and "properties" in out
        and not preserve
        and "additionalProperties" not in out
    ):
        out["additionalProperties"] = False
    for key in [k for k in out if k.startswith("x-kubernetes-")]:
        del out[key]
    return out


def crd_validator(crd: Schema, version: str) -> jsonschema.Draft4Validator:
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = to_jsonschema(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"type": "object"}  # the server validates metadata itself
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


def unknown_fields(validator: jsonschema.Draft4Validator, obj: Schema) -> list[str]:
    """Paths of fields the schema does not declare (kube-apiserver refuses them only under
    fieldValidation=Strict, kubectl's default, with a 400 'strict decoding error')."""
    found = []
    for error in validator.iter_errors(obj):
        if error.validator == "additionalProperties":
            path = ".".join(str(p) for p in error.absolute_path)
            unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            found += [f"{path + '.' if path else ''}{name}" for name in unknown]
    return sorted(found)


def field_errors(validator: jsonschema.Draft4Validator, obj: Schema) -> list[str]:
    """Messages in kube-apiserver's words: `spec.rounds: Invalid value: 0: ...`,
    `spec.strategy.name: Unsupported value: "FedMagic": supported values: ...`."""
    errors = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "additionalProperties":
            continue  # unknown_fields
        if error.validator == "enum":
            supported = ", ".join(json.dumps(v) for v in sorted(error.validator_value, key=str))
            errors.append(
                f"{path}: Unsupported value: {json.dumps(error.instance)}: supported values: {supported}"
            )
        elif error.validator == "type":
            kind = JSON_TYPES.get(type(error.instance), "null")
            expected = error.validator_value
            errors.append(
                f'{path}: Invalid value: "{kind}": {path} in body must be of type {expected}: "{kind}"'
            )
        elif error.validator == "required":
            errors.append(f"{path + '.' if path else ''}{error.message.split(chr(39))[1]}: Required value")
        else:
            errors.append(f"{path}: Invalid value: {error.instance!r}: {error.message}")
    return errors


def root_rules(crd: Schema, version: str) -> list[Schema]:
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    return list(served["schema"]["openAPIV3Schema"].get("x-kubernetes-validations", []))


def rule_errors(rules: list[Schema], obj: Schema, old: Schema | None) -> list[str]:
    """Messages in the API server's shape for the root rules `obj` breaks (`old`: on update)."""
    from cel import evaluate

    errors = []
    for rule in rules:
        if "oldSelf" in rule["rule"] and old is None:
            continue
        context = {"self": obj} | ({"oldSelf": old} if old is not None else {})
        if evaluate(rule["rule"], context) is not True:
            errors.append(
                f"<nil>: Invalid value: {rule.get('message') or rule['rule']}"
            )  # as kube-apiserver 1.37 words it
    return errors
