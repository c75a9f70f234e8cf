"""``/openapi.json`` tells the truth: every route is in it with its methods
(and nothing else is), and real answers of every endpoint, errors included,
match the schemas it gives for them."""

from __future__ import annotations

import json
import re

import attrs
from treq.testing import StubTreq
from twisted.trial import unittest

from tests.test_api import HOOK, APITestCase
from torque import openapi
from torque.api import TorqueAPI
from torque.auth import RequireToken
from torque.retry import Dead, Delivered, Postponed, Waiting
from torque.storage import NodeInfo
from torque.submission import MAX_AHEAD, InvalidTask, parse_submission

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
    if "anyOf" in schema:
        if any(not problems(value, s, doc, path) for s in schema["anyOf"]):
            return []
        return [f"{path}: matches none of anyOf"]
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
    if schema.get("exclusiveMinimum") and value == schema["minimum"]:
        found.append(f"{path}: {value!r} is the exclusive minimum")
    if "minLength" in schema and len(value) < schema["minLength"]:
        found.append(f"{path}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        found.append(f"{path}: longer than {schema['maxLength']}")
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
                    self.assertIn(path, {"/health", "/"})
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
        batch = [{"url": HOOK, "name": "n"}, {"url": HOOK, "queue": "b"}, {"url": "ftp://x"}]
        results = self.check("POST", "/tasks/batch", "/tasks/batch", 200, json=batch)["results"]
        self.assertEqual([r["status"] for r in results], [200, 201, 400])
        self.check("POST", "/tasks/batch", "/tasks/batch", 400, json={"url": HOOK})
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
        node = NodeInfo("n1", "h", 1, "0.1", ("default",), 2, 990.0, 1000.0)
        self.successResultOf(self.store.beat(node, 15.0))
        self.successResultOf(self.store.beat(attrs.evolve(node, id="n2", queues=None), 15.0))
        self.check("GET", "/nodes", "/nodes", 200)
        self.check("GET", "/queues", "/queues", 200)
        self.check("GET", "/queues?limit=1", "/queues", 200)
        self.check("GET", "/queues?limit=0", "/queues", 400)
        self.check("POST", "/queues/nothing/pause", q + "/pause", 404)
        self.check("POST", "/queues/nothing/resume", q + "/resume", 404)
        self.check("DELETE", "/queues/default", q, 409)
        self.check("DELETE", "/queues/nothing", q, 404)
        self.check("DELETE", "/queues/a.b", q, 400)
        emptied = self.check("POST", "/queues/emptied/tasks", q + "/tasks", 201, json={"url": HOOK})
        self.check("DELETE", f"/tasks/{emptied['id']}", t, 200)
        self.check("DELETE", "/queues/emptied", q, 200)
        self.check("PATCH", "/queues/default", q, 200, json={"rate": 2, "max_age": None})
        self.check("PATCH", "/queues/default", q, 400, json={"timeout": 0})
        self.check("GET", "/queues/default", q, 200)
        self.check("GET", "/queues/nothing", q, 404)
        self.check("GET", "/queues/a.b", q, 400)
        self.check("POST", "/queues/default/pause", q + "/pause", 200)
        self.check("POST", "/queues/default/resume", q + "/resume", 200)
        self.check("POST", "/queues/a.b/pause", q + "/pause", 400)
        self.check("POST", "/queues/a.b/resume", q + "/resume", 400)
        page = self.check("GET", "/queues/default/tasks?limit=1", q + "/tasks", 200)
        self.check("GET", f"/queues/default/tasks?cursor={page['next_cursor']}", q + "/tasks", 200)
        self.check("GET", "/queues/default/tasks?state=dead", q + "/tasks", 200)
        self.check("GET", "/queues/default/tasks?state=later", q + "/tasks", 400)
        self.check("GET", "/queues/default/dead?limit=5", q + "/dead", 200)
        self.check("GET", "/queues/default/dead?limit=0", q + "/dead", 400)
        self.check("POST", "/queues/default/dead/retry", q + "/dead/retry", 400, data=b"[]")
        self.check("POST", "/queues/default/dead/retry", q + "/dead/retry", 200, json={"ids": []})
        self.check("POST", "/queues/default/dead/retry", q + "/dead/retry", 200)
        self.check("DELETE", "/queues/default/dead", q + "/dead", 200, json={"ids": ["x"]})
        self.check("DELETE", "/queues/default/dead", q + "/dead", 400, data=b"{}")
        self.check("DELETE", "/queues/default/dead", q + "/dead", 200)
        self.check("DELETE", f"/tasks/{later['id']}", t, 200)
        delivered = self.check("POST", "/hooks/add", "/hooks/add", 201, json={"url": HOOK})
        claimed = self.successResultOf(self.store.claim("default", 1000.0, 100, 60.0, 20)).tasks
        (task,) = [c for c in claimed if c.id == delivered["id"]]
        self.successResultOf(self.store.settle("default", [(task, Delivered(200), 0.1)], 1000.0))
        self.check("DELETE", f"/tasks/{delivered['id']}", t, 409)
        self.check("DELETE", "/queues/default/tasks", q + "/tasks", 200)
        self.check("DELETE", "/queues/a.b/tasks", q + "/tasks", 400)
        self.check("DELETE", "/tasks/nope", t, 404)
        # A handler's word on tasks it took over (SPEC 4 "Later").
        for _ in range(2):
            self.check("POST", "/queues/handed/tasks", q + "/tasks", 201, json={"url": HOOK})
        handed = self.successResultOf(self.store.claim("handed", 1000.0, 2, 60.0, 20)).tasks
        waiting = [(task, Waiting(1600.0, 202)) for task in handed]
        self.successResultOf(self.store.settle("handed", waiting, 1000.0))
        done, failed = (task.id for task in handed)
        forged = {"Authorization": "Bearer tct.1." + "A" * 43}
        self.check("GET", f"/tasks/{done}", t, 200)  # waiting, with its deadline
        postponed = self.check("POST", "/queues/later/tasks", q + "/tasks", 201, json={"url": HOOK})
        (task,) = self.successResultOf(self.store.claim("later", 1000.0, 1, 60.0, 20)).tasks
        self.successResultOf(self.store.settle("later", [(task, Postponed(1060.0, 503))], 1000.0))
        self.check("GET", f"/tasks/{postponed['id']}", t, 200)
        self.check("POST", f"/tasks/{done}/complete", t + "/complete", 200)
        self.check("POST", f"/tasks/{done}/complete", t + "/complete", 409)
        self.check("POST", "/tasks/nope/complete", t + "/complete", 404)
        self.check("POST", f"/tasks/{failed}/complete", t + "/complete", 403, headers=forged)
        self.check("POST", f"/tasks/{failed}/fail", t + "/fail", 403, headers=forged, json={})
        self.check("POST", f"/tasks/{failed}/fail", t + "/fail", 400, json={})
        self.check("POST", f"/tasks/{failed}/fail", t + "/fail", 200, json={"error": "x"})
        self.check("POST", f"/tasks/{failed}/fail", t + "/fail", 409, json={"error": "x"})
        self.check("POST", "/tasks/nope/fail", t + "/fail", 404, json={"error": "x"})
        self.check("GET", "/health", "/health", 200)
        self.store.available = False
        for method, path, template in [
            ("POST", "/hooks/add", "/hooks/add"),
            ("POST", "/add_task", "/add_task"),
            ("POST", "/queues/default/tasks", q + "/tasks"),
            ("POST", "/tasks/batch", "/tasks/batch"),
            ("DELETE", "/queues/default/tasks", q + "/tasks"),
            ("GET", "/queues/default/tasks", q + "/tasks"),
            ("GET", "/tasks/x", t),
            ("DELETE", "/tasks/x", t),
            ("POST", "/tasks/x/run", t + "/run"),
            ("GET", "/queues", "/queues"),
            ("GET", "/queues/default", q),
            ("DELETE", "/queues/default", q),
            ("PATCH", "/queues/default", q),
            ("POST", "/tasks/x/complete", t + "/complete"),
            ("POST", "/tasks/x/fail", t + "/fail"),
            ("GET", "/nodes", "/nodes"),
            ("POST", "/queues/default/pause", q + "/pause"),
            ("POST", "/queues/default/resume", q + "/resume"),
            ("GET", "/queues/default/dead", q + "/dead"),
            ("POST", "/queues/default/dead/retry", q + "/dead/retry"),
            ("DELETE", "/queues/default/dead", q + "/dead"),
        ]:
            body = {"data": {"url": HOOK}} if "add" in path or path.endswith("tasks") else {}
            body = {"json": {"rate": 1}} if method == "PATCH" else body
            body = {"json": {"error": "x"}} if path.endswith("/fail") else body
            body = {"json": [{"url": HOOK}]} if path.endswith("batch") else body
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


class TokenTests(unittest.TestCase):
    def test_a_node_with_api_tokens_says_the_token_is_required(self):
        self.assertEqual(openapi.document(token_required=True)["security"], [{"bearer": []}])
        self.assertEqual(openapi.document()["security"], [{"bearer": []}, {}])

    def test_the_served_document_is_the_node_s(self):
        for token_required, security in [(True, [{"bearer": []}]), (False, [{"bearer": []}, {}])]:
            api = TorqueAPI(None, None, token_required=token_required)
            response = self.successResultOf(StubTreq(api.resource()).get("http://t/openapi.json"))
            served = self.successResultOf(response.json())
            self.assertEqual(served["security"], security)
            self.assertEqual(served["paths"]["/health"]["get"]["security"], [])


class LinkTests(unittest.TestCase):
    def test_an_added_task_s_id_leads_to_the_task_operations(self):
        doc = openapi.document()
        operations = {
            op["operationId"]: (path, op)
            for path, item in doc["paths"].items()
            for op in item.values()
        }
        for add in ["addTask", "addTaskAlias", "addTaskToQueue"]:
            links = operations[add][1]["responses"]["201"]["links"]
            self.assertEqual(
                {link["operationId"] for link in links.values()},
                {"getTask", "cancelTask", "runTask"},
            )
            for link in links.values():
                path, _ = operations[link["operationId"]]
                self.assertEqual(set(link["parameters"]), set(re.findall(r"{(\w+)}", path)))
                self.assertEqual(link["parameters"]["task_id"], "$response.body#/id")


class SubmissionSchemaTests(unittest.TestCase):
    """What the document says of a submission is never looser than the
    node: what it forbids is refused (schemathesis's negative_data_rejection
    check, here for chosen cases), and what the node takes it allows."""

    def setUp(self):
        self.doc = openapi.document()
        self.json = self.doc["components"]["schemas"]["Submission"]
        self.form = self.doc["components"]["schemas"]["FormSubmission"]

    def taken(self, fields, is_form=False, base_url=None) -> bool:
        try:
            parse_submission(
                fields, new_id=lambda q: "t", now=0.0, is_form=is_form, base_url=base_url
            )
        except InvalidTask:
            return False
        return True

    def test_null_or_empty_is_as_if_not_given_and_documented_so(self):
        optional = set(self.json["properties"]) - {"url", "json"}
        self.assertEqual(
            optional,
            {
                "params",
                "delay",
                "eta",
                "queue",
                "name",
                "method",
                "headers",
                "timeout",
                "max_errors",
            },
        )
        for field in sorted(optional):
            for value in (None, ""):
                fields = {"url": HOOK, field: value}
                self.assertEqual(problems(fields, self.json, self.doc), [], (field, value))
                self.assertTrue(self.taken(fields), (field, value))

    def test_what_the_node_takes_the_document_allows(self):
        for fields, base_url in [
            ({"url": HOOK, "method": "post", "delay": "2.5", "max_errors": "3"}, None),
            ({"url": "HTTPS://Example.com", "timeout": 0.5, "eta": 10}, None),
            ({"url": "http://127.0.0.1:8080/x", "headers": '{"X-A": "b"}'}, None),
            ({"url": "http://bücher.example/é?q=ü#x", "params": {"a": 1}}, None),
            ({"url": "/hooks/do/foo", "queue": "emails", "name": "n-1"}, "http://app:8000"),
        ]:
            self.assertTrue(self.taken(fields, base_url=base_url), fields)
            self.assertEqual(problems(fields, self.json, self.doc), [], fields)

    def test_what_the_document_forbids_the_node_refuses(self):
        for fields in [
            {},
            {"url": ""},
            {"url": None},
            {"url": "ftp://app.test/x"},
            {"url": " " + HOOK},
            {"url": HOOK + " x"},
            {"url": "http:///x"},
            {"url": "http://"},
            {"url": "hooks/do/foo"},
            {"url": "http://app.test/" + "a" * 2083},
            {"url": HOOK, "method": "BREW"},
            {"url": HOOK, "method": "po\u017ft"},
            {"url": HOOK, "name": "a b"},
            {"url": HOOK, "queue": "a.b"},
            {"url": HOOK, "delay": -1},
            {"url": HOOK, "delay": MAX_AHEAD + 1},
            {"url": HOOK, "timeout": 0},
            {"url": HOOK, "timeout": 86401},
            {"url": HOOK, "max_errors": 0},
            {"url": HOOK, "max_errors": True},
            {"url": HOOK, "headers": ["X-A"]},
            {"url": HOOK, "nope": 1},
        ]:
            self.assertNotEqual(problems(fields, self.json, self.doc), [], fields)
            self.assertFalse(self.taken(fields), fields)

    def test_a_form_without_a_url_is_refused_and_documented_so(self):
        for fields in [{}, {"url": ""}, {"url": "ftp://x"}]:
            self.assertNotEqual(problems(fields, self.form, self.doc), [], fields)
            self.assertFalse(self.taken(fields, is_form=True), fields)
