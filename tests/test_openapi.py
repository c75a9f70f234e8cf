"""``/openapi.json`` tells the truth: every route is in it with its methods
(and nothing else is), and real answers of every endpoint, errors included,
match the schemas it gives for them."""

from __future__ import annotations

import json
import re

from treq.testing import StubTreq
from twisted.trial import unittest

from tests.test_api import HOOK, APITestCase
from torque import openapi
from torque.api import TorqueAPI
from torque.auth import RequireToken
from torque.retry import Dead

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def resolve(schema: dict, doc: dict) -> dict:
    while "$ref" in schema:
        *_, section, name = schema["$ref"].split("/")
        schema = doc["components"][section][name]
    return schema


def problems(value, schema: dict, doc: dict, path: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (the OpenAPI 3.0 subset used by
    torque.openapi); an empty list when it conforms."""
    schema = resolve(schema, doc)
    if value is None:
        return [] if schema.get("nullable") or "type" not in schema else [f"{path}: null"]
    if "oneOf" in schema:
        matches = [s for s in schema["oneOf"] if not problems(value, s, doc, path)]
        return [] if len(matches) == 1 else [f"{path}: matches {len(matches)} of oneOf"]
    kind = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if kind and not checks[kind](value):
        return [f"{path}: {value!r} is not {kind}"]
    found = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        found.append(f"{path}: {value!r} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        found.append(f"{path}: {value!r} > {schema['maximum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        found.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if kind == "object":
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"{path}: {name} is missing")
        for name, item in value.items():
            if name in properties:
                found += problems(item, properties[name], doc, f"{path}.{name}")
            elif schema.get("additionalProperties", True) is False:
                found.append(f"{path}: unexpected {name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += problems(item, schema["additionalProperties"], doc, f"{path}.{name}")
    if kind == "array":
        for i, item in enumerate(value):
            found += problems(item, schema.get("items", {}), doc, f"{path}[{i}]")
    return found


def documented_routes(doc: dict) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


class DocumentTests(unittest.TestCase):
    def setUp(self):
        self.doc = openapi.document()

    def test_every_route_is_documented_and_nothing_else(self):
        served = set()
        for rule in TorqueAPI.app.url_map.iter_rules():
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            served |= {(path, m) for m in rule.methods if m.lower() in HTTP_METHODS}
        self.assertEqual(documented_routes(self.doc), served)

    def test_path_parameters_are_declared(self):
        for path, item in self.doc["paths"].items():
            names = set(re.findall(r"{(\w+)}", path))
            for method, operation in item.items():
                declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
                self.assertEqual(declared, names, f"{method} {path}")

    def test_every_reference_resolves(self):
        refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(self.doc))
        self.assertTrue(refs)
        for ref in refs:
            resolve({"$ref": ref}, self.doc)

    def test_protected_operations_document_401_and_open_ones_need_no_token(self):
        for path, item in self.doc["paths"].items():
            for method, operation in item.items():
                if operation.get("security") == []:
                    self.assertIn(path, {"/health", "/", "/openapi.json"})
                else:
                    self.assertIn("401", operation["responses"], f"{method} {path}")

    def test_operation_ids_are_unique(self):
        ids = [op["operationId"] for item in self.doc["paths"].values() for op in item.values()]
        self.assertEqual(len(ids), len(set(ids)))

    def test_it_is_served_and_a_copy(self):
        api = TorqueAPI(None, None)
        response = self.successResultOf(StubTreq(api.resource()).get("http://t/openapi.json"))
        served = self.successResultOf(response.json())
        self.assertEqual(served["openapi"], "3.0.3")
        self.assertEqual(served, self.doc)
        self.doc["paths"].clear()
        self.assertTrue(openapi.document()["paths"])


class ConformanceTests(APITestCase):
    """Real answers, checked against the schema documented for their status."""

    def setUp(self):
        super().setUp()
        self.ids = iter(f"t{i}" for i in range(1, 100))
        self.doc = openapi.document()
        self.checked: set[tuple[str, str, str]] = set()

    def check(self, method, path, template, status, **kwargs):
        response, body = self.call(method, path, **kwargs)
        self.assertEqual(response.code, status, (method, path, body))
        operation = self.doc["paths"][template][method.lower()]
        documented = resolve(operation["responses"][str(status)], self.doc)
        schema = documented["content"]["application/json"]["schema"]
        self.assertEqual(problems(body, schema, self.doc), [], (method, path, status))
        self.checked.add((template, method.upper(), str(status)))
        return body

    def test_every_json_answer_matches_its_schema(self):
        q, t = "/queues/{queue}", "/tasks/{task_id}"
        later = self.check(
            "POST", "/hooks/add", "/hooks/add", 201, data={"url": HOOK, "delay": "60"}
        )
        headers = {"Authorization": "Bearer x", "X-Id": "1"}
        added = self.check(
            "POST",
            "/add_task",
            "/add_task",
            201,
            json={"url": HOOK, "name": "n", "headers": headers},
        )
        self.check("POST", "/hooks/add", "/hooks/add", 200, json={"url": HOOK, "name": "n"})
        self.check("POST", "/add_task", "/add_task", 200, json={"url": HOOK, "name": "n"})
        self.check(
            "POST", "/queues/default/tasks", q + "/tasks", 200, json={"url": HOOK, "name": "n"}
        )
        self.check("POST", "/queues/default/tasks", q + "/tasks", 201, json={"url": HOOK})
        self.check("POST", "/hooks/add", "/hooks/add", 400, data={"url": "ftp://x"})
        self.check("POST", "/add_task", "/add_task", 400, json={"nope": 1})
        self.check("POST", "/queues/default/tasks", q + "/tasks", 400, json={})
        # A history, and a dead letter.
        tasks = self.successResultOf(self.store.claim("default", 1000.0, 1, 60.0, 20)).tasks
        self.successResultOf(
            self.store.settle("default", [(tasks[0], Dead(404, "no"), 0.1)], 1000.0)
        )
        dead_id = tasks[0].id
        self.check("GET", f"/tasks/{dead_id}", t, 200)
        self.check("GET", f"/tasks/{added['id']}", t, 200)
        self.check("GET", "/tasks/nope", t, 404)
        self.check("POST", f"/tasks/{later['id']}/run", t + "/run", 200)
        self.check("POST", f"/tasks/{dead_id}/run", t + "/run", 409)
        self.check("POST", "/tasks/nope/run", t + "/run", 404)
        self.check("GET", "/queues", "/queues", 200)
        self.check("GET", "/queues/default", q, 200)
        self.check("GET", "/queues/nothing", q, 404)
        self.check("GET", "/queues/a.b", q, 400)
        self.check("POST", "/queues/default/pause", q + "/pause", 200)
        self.check("POST", "/queues/default/resume", q + "/resume", 200)
        self.check("POST", "/queues/a.b/pause", q + "/pause", 400)
        self.check("POST", "/queues/a.b/resume", q + "/resume", 400)
        self.check("GET", "/queues/default/dead?limit=5", q + "/dead", 200)
        self.check("GET", "/queues/default/dead?limit=0", q + "/dead", 400)
        self.check("POST", "/queues/default/dead/retry", q + "/dead/retry", 400, data=b"[]")
        self.check("POST", "/queues/default/dead/retry", q + "/dead/retry", 200, json={"ids": []})
        self.check("POST", "/queues/default/dead/retry", q + "/dead/retry", 200)
        self.check("DELETE", "/queues/default/dead", q + "/dead", 200, json={"ids": ["x"]})
        self.check("DELETE", "/queues/default/dead", q + "/dead", 400, data=b"{}")
        self.check("DELETE", "/queues/default/dead", q + "/dead", 200)
        self.check("DELETE", f"/tasks/{later['id']}", t, 200)
        self.check("DELETE", "/queues/default/tasks", q + "/tasks", 200)
        self.check("DELETE", "/queues/a.b/tasks", q + "/tasks", 400)
        self.check("DELETE", "/tasks/nope", t, 404)
        self.check("GET", "/health", "/health", 200)
        self.store.available = False
        for method, path, template in [
            ("POST", "/hooks/add", "/hooks/add"),
            ("POST", "/add_task", "/add_task"),
            ("POST", "/queues/default/tasks", q + "/tasks"),
            ("DELETE", "/queues/default/tasks", q + "/tasks"),
            ("GET", "/tasks/x", t),
            ("DELETE", "/tasks/x", t),
            ("POST", "/tasks/x/run", t + "/run"),
            ("GET", "/queues", "/queues"),
            ("GET", "/queues/default", q),
            ("POST", "/queues/default/pause", q + "/pause"),
            ("POST", "/queues/default/resume", q + "/resume"),
            ("GET", "/queues/default/dead", q + "/dead"),
            ("POST", "/queues/default/dead/retry", q + "/dead/retry"),
            ("DELETE", "/queues/default/dead", q + "/dead"),
        ]:
            body = {"data": {"url": HOOK}} if "add" in path or path.endswith("tasks") else {}
            self.check(method, path, template, 503, **body)
        self.check("GET", "/health", "/health", 503)
        # Every documented JSON answer but 401 and 413 (below, and in
        # test_e2e) was produced and checked here.
        expected = {
            (path, method.upper(), status)
            for path, item in self.doc["paths"].items()
            for method, operation in item.items()
            for status, response in operation["responses"].items()
            if status not in ("401", "413")
            and "application/json" in resolve(response, self.doc).get("content", {})
            and path != "/openapi.json"
        }
        self.assertEqual(expected - self.checked, set())

    def test_405_and_404_of_unknown_paths_are_the_error_shape(self):
        error = self.doc["components"]["schemas"]["Error"]
        for method, path, status in [("PUT", "/queues", 405), ("GET", "/nowhere", 404)]:
            response, body = self.call(method, path)
            self.assertEqual(response.code, status)
            self.assertEqual(problems(body, error, self.doc), [])

    def test_401_is_the_error_shape(self):
        stub = StubTreq(RequireToken(self.api.resource(), ["secret"]))
        response = self.successResultOf(stub.get("http://t/queues"))
        self.assertEqual(response.code, 401)
        body = self.successResultOf(response.json())
        self.assertEqual(problems(body, self.doc["components"]["schemas"]["Error"], self.doc), [])
