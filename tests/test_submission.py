"""Tests of torque.submission: how a submission (§3 of the spec) becomes a
Task, and how params are form-encoded.

Most tests are tables: each case is a tuple whose first item names it, and
every assertion carries that name so a failure says which case broke.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

from twisted.trial import unittest

from torque import submission
from torque.submission import (
    InvalidTask,
    encode_params,
    parse_submission,
    require_text,
    strict_json,
)
from torque.task import FORM, JSON, Task

NOW = 1_700_000_000.0
HOOK = "http://example.com/hooks/do/foo"
BASE = "http://app:8000"


def parse(fields: dict[str, Any], **kwargs: Any) -> Task:
    """A JSON-request submission (values are JSON values) at ``NOW``."""
    kwargs.setdefault("new_id", lambda queue: f"{queue}.t1")
    kwargs.setdefault("now", NOW)
    return parse_submission(fields, **kwargs)


def parse_form(fields: dict[str, str], **kwargs: Any) -> Task:
    """A form-post submission: every value is text, JSON fields as JSON."""
    return parse(fields, is_form=True, **kwargs)


def fields_to_hash(flat: list[str]) -> dict[str, str]:
    """What HGETALL gives back for the HSET arguments of ``to_fields``."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class SubmissionTestCase(unittest.TestCase):
    def assertInvalid(
        self,
        case: str,
        fields: dict[str, Any],
        field: str,
        code: str = "invalid_field",
        **kwargs: Any,
    ) -> InvalidTask:
        """``fields`` is refused, blaming ``field`` with ``code``."""
        try:
            task = parse(fields, **kwargs)
        except InvalidTask as e:
            self.assertEqual((e.field, e.code), (field, code), f"{case}: {e.message}")
            self.assertTrue(e.message, f"{case}: the error has a message")
            return e
        self.fail(f"{case}: {fields!r} was accepted as {task!r}")

    def assertInvalidCases(self, cases: list[tuple]) -> None:
        """Each case is ``(name, fields, field)`` or ``(name, fields, field,
        kwargs)``: a submission refused with code ``invalid_field``."""
        for name, fields, field, *kwargs in cases:
            self.assertInvalid(name, fields, field, **(kwargs[0] if kwargs else {}))


class SeedExampleTests(SubmissionTestCase):
    def test_form_params_become_a_form_body(self):
        task = parse_form({"url": HOOK, "params": '{"foo": "somevalue", "baz": 99}'})
        self.assertEqual(
            task,
            Task(
                id="default.t1",
                queue="default",
                url=HOOK,
                method="POST",
                body="foo=somevalue&baz=99",
                content_type=FORM,
                headers={},
                name="",
                due_at=NOW,
                created_at=NOW,
                timeout=None,
                max_errors=None,
                attempts=0,
            ),
        )


class PayloadTests(SubmissionTestCase):
    def test_json_request_params_as_object_or_as_json_text(self):
        cases = [
            ("object", {"foo": "somevalue", "baz": 99}),
            ("JSON text", '{"foo": "somevalue", "baz": 99}'),
        ]
        for name, params in cases:
            task = parse({"url": HOOK, "params": params})
            self.assertEqual((task.body, task.content_type), ("foo=somevalue&baz=99", FORM), name)

    def test_json_field_is_delivered_as_a_json_body(self):
        cases = [
            ("object", {"a": 1, "b": [True, None]}, '{"a":1,"b":[true,null]}'),
            ("array", [1, 2], "[1,2]"),
            ("string", "text", '"text"'),
            ("string that looks like JSON", "[1]", '"[1]"'),
            ("number", 3.5, "3.5"),
            ("null", None, "null"),
            ("false", False, "false"),
        ]
        for name, value, body in cases:
            task = parse({"url": HOOK, "json": value})
            self.assertEqual((task.body, task.content_type), (body, JSON), name)

    def test_form_json_field_is_json_text(self):
        cases = [
            ("object", '{"a": 1}', '{"a":1}'),
            ("array", "[1, 2]", "[1,2]"),
            ("string", '"text"', '"text"'),
        ]
        for name, text, body in cases:
            task = parse_form({"url": HOOK, "json": text})
            self.assertEqual((task.body, task.content_type), (body, JSON), name)

    def test_no_params_means_no_body(self):
        for name, fields in [
            ("absent", {"url": HOOK}),
            ("empty", {"url": HOOK, "params": ""}),
            ("null", {"url": HOOK, "params": None}),
        ]:
            task = parse(fields)
            self.assertEqual((task.body, task.content_type), ("", ""), name)

    def test_params_and_json_together_are_refused(self):
        self.assertInvalid("JSON request", {"url": HOOK, "params": {"a": 1}, "json": {}}, "json")
        self.assertInvalid(
            "form post",
            {"url": HOOK, "params": '{"a": 1}', "json": "{}"},
            "json",
            is_form=True,
        )

    def test_bad_params_are_refused(self):
        self.assertInvalidCases(
            [
                ("array", {"url": HOOK, "params": [1, 2]}, "params"),
                ("number", {"url": HOOK, "params": 5}, "params"),
                ("text not JSON", {"url": HOOK, "params": "foo=bar"}, "params"),
                ("JSON text of an array", {"url": HOOK, "params": "[1]"}, "params"),
                ("form, not JSON", {"url": HOOK, "params": "foo=bar"}, "params", {"is_form": True}),
                ("form, JSON string", {"url": HOOK, "params": '"x"'}, "params", {"is_form": True}),
            ]
        )

    def test_form_json_that_is_not_json_is_refused(self):
        self.assertInvalid("form", {"url": HOOK, "json": "{nope"}, "json", is_form=True)

    def test_get_and_delete_carry_params_in_the_query_string(self):
        cases = [
            ("GET", HOOK, HOOK + "?foo=x&baz=99"),
            ("DELETE", HOOK, HOOK + "?foo=x&baz=99"),
            ("GET", HOOK + "?page=2", HOOK + "?page=2&foo=x&baz=99"),
        ]
        for method, url, expected in cases:
            case = f"{method} {url}"
            task = parse({"url": url, "method": method, "params": {"foo": "x", "baz": 99}})
            self.assertEqual((task.url, task.body, task.content_type), (expected, "", ""), case)

    def test_get_and_delete_refuse_json(self):
        for method in ["GET", "DELETE", "get"]:
            self.assertInvalid(method, {"url": HOOK, "method": method, "json": {"a": 1}}, "json")

    def test_query_string_that_makes_the_url_too_long_is_refused(self):
        fields = {"url": HOOK, "method": "GET", "params": {"p": "x" * 2083}}
        self.assertInvalid("GET with long params", fields, "params")

    def test_post_params_do_not_touch_the_url(self):
        task = parse({"url": HOOK + "?page=2", "params": {"a": 1}})
        self.assertEqual((task.url, task.body), (HOOK + "?page=2", "a=1"))

    def test_query_string_goes_before_a_fragment(self):
        # The fragment is never sent: params appended after it are lost.
        task = parse({"url": HOOK + "#top", "method": "GET", "params": {"a": 1}})
        self.assertEqual(task.url, HOOK + "?a=1#top")


class DueTimeTests(SubmissionTestCase):
    def test_delay_counts_from_now(self):
        cases = [
            ("no delay", {}, NOW),
            ("empty delay", {"delay": ""}, NOW),
            ("null delay", {"delay": None}, NOW),
            ("zero", {"delay": 0}, NOW),
            ("integer", {"delay": 20}, NOW + 20),
            ("float", {"delay": 2.5}, NOW + 2.5),
            ("form text", {"delay": "2.5"}, NOW + 2.5),
        ]
        for name, fields, due_at in cases:
            task = parse({"url": HOOK, **fields})
            self.assertEqual(task.due_at, due_at, name)
            self.assertEqual(task.created_at, NOW, name)

    def test_eta_is_an_absolute_time(self):
        cases = [
            ("future float", NOW + 86400.25, NOW + 86400.25),
            ("form text", repr(NOW + 86400.25), NOW + 86400.25),
            ("30 days ahead", NOW + 30 * 86400, NOW + 30 * 86400),
            ("now", NOW, NOW),
            ("a second ago is now", NOW - 1, NOW),
            ("a day ago is now", NOW - 86400, NOW),
            ("a day ago, as text", repr(NOW - 86400), NOW),
        ]
        for name, eta, due_at in cases:
            task = parse({"url": HOOK, "eta": eta})
            self.assertEqual(task.due_at, due_at, name)

    def test_eta_more_than_a_day_ago_is_refused(self):
        # -1e300 made oldest_due_age (and its gauge) 1e+300.
        self.assertInvalidCases(
            [
                (name, {"url": HOOK, "eta": eta}, "eta")
                for name, eta in [
                    ("a day and a second ago", NOW - 86401),
                    ("1970", 1000.0),
                    ("zero", 0),
                    ("negative", -1),
                    ("-1e300", -1e300),
                    ("-1e300 as text", "-1e300"),
                ]
            ]
        )

    def test_delay_and_eta_together_are_refused(self):
        self.assertInvalid("both", {"url": HOOK, "delay": 5, "eta": NOW + 5}, "eta")
        self.assertInvalid("zero delay too", {"url": HOOK, "delay": 0, "eta": NOW}, "eta")

    def test_bad_delay_or_eta_is_refused_naming_it(self):
        cases = []
        for field in ["delay", "eta"]:
            for name, value in [
                ("text", "soon"),
                ("blank text", "  "),
                ("NaN text", "nan"),
                ("infinity text", "inf"),
                ("NaN", float("nan")),
                ("infinity", float("inf")),
                ("minus infinity", float("-inf")),
                ("true", True),
                ("false", False),
                ("array", [1]),
                ("object", {"s": 1}),
            ]:
                cases.append((f"{field} {name}", {"url": HOOK, field: value}, field))
        cases += [
            ("negative delay", {"url": HOOK, "delay": -1}, "delay"),
            ("negative delay text", {"url": HOOK, "delay": "-0.5"}, "delay"),
        ]
        self.assertInvalidCases(cases)


class QueueTests(SubmissionTestCase):
    def test_queue_defaults_to_default(self):
        for name, fields in [("absent", {}), ("empty", {"queue": ""}), ("null", {"queue": None})]:
            self.assertEqual(parse({"url": HOOK, **fields}).queue, "default", name)

    def test_queue_names_that_match_the_pattern(self):
        for queue in ["emails", "a", "A-b_9", "q" * 100]:
            self.assertEqual(parse({"url": HOOK, "queue": queue}).queue, queue, queue)

    def test_queue_names_that_do_not_match_are_refused(self):
        self.assertInvalidCases(
            [
                (name, {"url": HOOK, "queue": queue}, "queue")
                for name, queue in [
                    ("space", "my queue"),
                    ("slash", "a/b"),
                    ("dot", "a.b"),
                    ("colon", "a:b"),
                    ("non-ASCII", "café"),
                    ("101 characters", "q" * 101),
                    ("number", 5),
                ]
            ]
        )

    def test_route_queue_is_used_when_the_body_names_none(self):
        self.assertEqual(parse({"url": HOOK}, queue="emails").queue, "emails")

    def test_body_queue_may_repeat_the_route_queue(self):
        # As a request gives it: the body's text is not the route's str object.
        body = json.loads(json.dumps({"url": HOOK, "queue": "emails"}))
        self.assertEqual(parse(body, queue="emails").queue, "emails")

    def test_body_queue_that_differs_from_the_route_is_refused(self):
        for queue in ("other", "a"):  # sorting after the route's name, and before it
            self.assertInvalid(queue, {"url": HOOK, "queue": queue}, "queue", queue="emails")

    def test_invalid_route_queue_is_refused(self):
        for route in ["bad queue", "q" * 101, "a.b"]:
            self.assertInvalid(f"route {route!r}", {"url": HOOK}, "queue", queue=route)


class NameTests(SubmissionTestCase):
    def test_names_that_match_the_pattern(self):
        cases = [
            ("absent", None, ""),
            ("short", "job-1_A", "job-1_A"),
            ("500", "n" * 500, "n" * 500),
        ]
        for case, name, expected in cases:
            self.assertEqual(parse({"url": HOOK, "name": name}).name, expected, case)

    def test_names_that_do_not_match_are_refused(self):
        self.assertInvalidCases(
            [
                (case, {"url": HOOK, "name": name}, "name")
                for case, name in [
                    ("501 characters", "n" * 501),
                    ("space", "my job"),
                    ("dot", "job.1"),
                    ("slash", "a/b"),
                    ("number", 42),
                ]
            ]
        )


class MethodTests(SubmissionTestCase):
    def test_method_is_case_insensitive_and_defaults_to_post(self):
        cases = [
            (None, "POST"),
            ("", "POST"),
            ("post", "POST"),
            ("Put", "PUT"),
            ("patch", "PATCH"),
            ("DELETE", "DELETE"),
            ("get", "GET"),
        ]
        for method, expected in cases:
            task = parse({"url": HOOK, "method": method})
            self.assertEqual(task.method, expected, repr(method))

    def test_unknown_methods_are_refused(self):
        self.assertInvalidCases(
            [
                (repr(method), {"url": HOOK, "method": method}, "method")
                for method in ["HEAD", "OPTIONS", "CONNECT", "TRACE", "FETCH", " POST", 5, True]
            ]
        )


class HeadersTests(SubmissionTestCase):
    def test_headers_as_object_or_json_text(self):
        cases = [
            ("JSON object", {"X-Trace": "abc", "Authorization": "Bearer t"}, {}),
            ("JSON text", '{"X-Trace": "abc", "Authorization": "Bearer t"}', {}),
            ("form", '{"X-Trace": "abc", "Authorization": "Bearer t"}', {"is_form": True}),
        ]
        for name, headers, kwargs in cases:
            task = parse({"url": HOOK, "headers": headers}, **kwargs)
            self.assertEqual(task.headers, {"X-Trace": "abc", "Authorization": "Bearer t"}, name)

    def test_no_headers(self):
        for name, headers in [("null", None), ("empty", ""), ("empty object", {})]:
            self.assertEqual(parse({"url": HOOK, "headers": headers}).headers, {}, name)

    def test_bad_headers_are_refused(self):
        self.assertInvalidCases(
            [
                (name, {"url": HOOK, "headers": headers}, "headers")
                for name, headers in [
                    ("Host", {"Host": "evil.example"}),
                    ("Content-Length", {"Content-Length": "3"}),
                    ("lower-case content-length", {"content-length": "3"}),
                    ("Transfer-Encoding", {"Transfer-Encoding": "chunked"}),
                    ("Connection", {"Connection": "close"}),
                    ("Content-Type", {"Content-Type": "text/plain"}),
                    ("CR LF in a value", {"X-A": "a\r\nX-Injected: b"}),
                    ("LF in a value", {"X-A": "a\nb"}),
                    ("CR in a value", {"X-A": "a\rb"}),
                    ("space in a name", {"X A": "x"}),
                    ("colon in a name", {"X-A:": "x"}),
                    ("empty name", {"": "x"}),
                    ("number value", {"X-A": 1}),
                    ("null value", {"X-A": None}),
                    ("array", ["X-A"]),
                    ("number", 5),
                    ("text, not JSON", "X-A: b"),
                    ("JSON text of an array", '["X-A"]'),
                ]
            ]
        )
        self.assertInvalid(
            "form, not JSON", {"url": HOOK, "headers": "X-A: b"}, "headers", is_form=True
        )

    def test_torques_own_headers_are_refused_in_any_letter_case(self):
        # They were delivered twice, the spoofed copy first (SPEC §4).
        for header in [
            "User-Agent",
            "X-Torque-Task-Id",
            "X-Torque-Queue",
            "X-Torque-Task-Name",
            "X-Torque-Retry-Count",
            "X-Torque-ETA",
            "X-Torque-Anything-Else",
            "Webhook-Id",
            "Webhook-Timestamp",
            "Webhook-Signature",
        ]:
            for name in {header, header.lower(), header.upper(), header.swapcase()}:
                e = self.assertInvalid(
                    name, {"url": HOOK, "headers": {"X-Fine": "1", name: "SPOOF"}}, "headers"
                )
                self.assertIn(repr(name), e.message, name)
                self.assertIn("set by torque", e.message, name)

    def test_headers_that_merely_look_like_torques_are_kept(self):
        headers = {"X-Torque": "a", "X-Torqueish-Id": "b", "Webhook-Idx": "c", "User-Agents": "d"}
        self.assertEqual(parse({"url": HOOK, "headers": headers}).headers, headers)

    def test_nul_in_a_header_value_is_refused(self):
        # RFC 9110 §5.5: CR, LF and NUL are all invalid in a field value.
        self.assertInvalid("NUL in a value", {"url": HOOK, "headers": {"X-A": "a\x00b"}}, "headers")


class LimitsTests(SubmissionTestCase):
    def test_timeout_and_max_errors_overrides(self):
        cases = [
            ("no overrides", {}, None, None),
            ("timeout", {"timeout": 30}, 30.0, None),
            ("fractional timeout", {"timeout": 2.5}, 2.5, None),
            ("timeout text", {"timeout": "2.5"}, 2.5, None),
            ("longest timeout", {"timeout": 86400}, 86400.0, None),
            ("max_errors", {"max_errors": 1}, None, 1),
            ("max_errors text", {"max_errors": "5"}, None, 5),
            ("most max_errors", {"max_errors": 10000}, None, 10000),
        ]
        for name, fields, timeout, max_errors in cases:
            task = parse({"url": HOOK, **fields})
            self.assertEqual((task.timeout, task.max_errors), (timeout, max_errors), name)

    def test_bad_timeout_or_max_errors_is_refused(self):
        self.assertInvalidCases(
            [
                (f"{field} {name}", {"url": HOOK, field: value}, field)
                for field, name, value in [
                    ("timeout", "zero", 0),
                    ("timeout", "negative", -1),
                    ("timeout", "over a day", 86401),
                    ("timeout", "text", "slow"),
                    ("timeout", "NaN", "nan"),
                    ("timeout", "infinity", float("inf")),
                    ("timeout", "true", True),
                    ("max_errors", "zero", 0),
                    ("max_errors", "negative", -3),
                    ("max_errors", "over the limit", 10001),
                    ("max_errors", "fraction", 1.5),
                    ("max_errors", "fraction text", "1.5"),
                    ("max_errors", "text", "many"),
                    ("max_errors", "true", True),
                ]
            ]
        )


class UrlTests(SubmissionTestCase):
    def test_missing_url_is_refused_as_missing(self):
        for name, fields in [("absent", {}), ("empty", {"url": ""}), ("null", {"url": None})]:
            self.assertInvalid(name, fields, "url", "missing_field")

    def test_http_and_https_urls_are_accepted_unchanged(self):
        longest = "http://example.com/" + "a" * (2083 - len("http://example.com/"))
        for url in [
            HOOK,
            "https://example.com",
            "HTTPS://Example.com/x",
            "http://127.0.0.1:8000/x?y=1",
            longest,
        ]:
            self.assertEqual(parse({"url": url}).url, url, url[:40])

    def test_bad_urls_are_refused(self):
        too_long = "http://example.com/" + "a" * (2084 - len("http://example.com/"))
        self.assertInvalidCases(
            [
                (name, {"url": url}, "url")
                for name, url in [
                    ("ftp", "ftp://example.com/file"),
                    ("mailto", "mailto:a@example.com"),
                    ("no scheme", "example.com/hooks"),
                    ("no host", "http://"),
                    ("no host, a path", "http:///hooks"),
                    ("only a port", "https://:80/"),
                    ("space in the host", "http://exa mple.com/"),
                    ("leading space", " " + HOOK),
                    ("trailing tab", HOOK + "\t"),
                    ("newline", HOOK + "\n"),
                    ("control character", HOOK + "\x01"),
                    ("bad port", "http://example.com:99999/"),
                    ("bad IPv6", "http://[::1/"),
                    ("2084 characters", too_long),
                    ("number", 42),
                    ("path without --base-task-url", "/hooks/do/foo"),
                    ("a scheme that starts like http", "httpx://example.com/"),
                    ("https with a suffix", "https2://example.com/"),
                    ("ws", "ws://example.com/"),
                    ("file", "file:///etc/passwd"),
                ]
            ]
        )

    def test_urls_with_credentials_are_refused_naming_authorization(self):
        for url in [
            "http://user:pa55@example.com/hooks",
            "https://user@example.com/",
            "http://:pa55@example.com/",
            "http://@example.com/",
            "HTTP://User:pa55@Example.com:8080/x?y=1",
        ]:
            e = self.assertInvalid(url, {"url": url}, "url")
            self.assertIn("Authorization", e.message, url)
            self.assertNotIn("pa55", e.message, url)
            self.assertNotIn("user", e.message.replace("user name", ""), url)
        joined = self.assertInvalid(
            "base URL with credentials",
            {"url": "/hooks"},
            "url",
            base_url="http://user:pa55@app:8000",
        )
        self.assertNotIn("pa55", joined.message)

    def test_an_at_sign_after_the_host_is_not_a_credential(self):
        for url in ["http://example.com/a@b", "http://example.com/?to=a@b.c"]:
            self.assertEqual(parse({"url": url}).url, url)

    def test_path_is_joined_to_the_base_url_with_one_slash(self):
        cases = [
            (BASE, "/hooks/do/foo", BASE + "/hooks/do/foo"),
            (BASE + "/", "/hooks/do/foo", BASE + "/hooks/do/foo"),
            (BASE + "/api", "/hooks/do/foo", BASE + "/api/hooks/do/foo"),
            (BASE + "/api/", "/hooks/do/foo?x=1", BASE + "/api/hooks/do/foo?x=1"),
            (BASE, HOOK, HOOK),
        ]
        for base_url, url, expected in cases:
            task = parse({"url": url}, base_url=base_url)
            self.assertEqual(task.url, expected, f"{base_url} + {url}")

    def test_params_may_bring_a_get_url_to_the_limit_but_not_past_it(self):
        def fields(length):  # a GET whose params make a url of that length
            return {"url": HOOK, "method": "GET", "params": {"a": "x" * (length - len(HOOK) - 3)}}

        self.assertEqual(len(parse(fields(2083)).url), 2083)
        self.assertInvalid("one over", fields(2084), "params")

    def test_joined_url_over_the_limit_is_refused(self):
        path = "/" + "a" * (2083 - len(BASE))
        self.assertInvalid("base + long path", {"url": path}, "url", base_url=BASE)


class UnknownFieldTests(SubmissionTestCase):
    def test_unknown_field_is_refused_by_name(self):
        error = self.assertInvalid("typo", {"url": HOOK, "delya": 5}, "delya", "unknown_field")
        self.assertIn("delya", error.message)

    def test_of_several_unknown_fields_the_first_in_order_is_named(self):
        error = self.assertInvalid(
            "two", {"url": HOOK, "zeta": 1, "alpha": 2}, "alpha", "unknown_field"
        )
        self.assertIn("unknown field 'alpha'", error.message)

    def test_unknown_field_in_a_form_post(self):
        self.assertInvalid(
            "form", {"url": HOOK, "callback": "x"}, "callback", "unknown_field", is_form=True
        )


class EncodeParamsTests(unittest.TestCase):
    def test_table(self):
        cases = [
            ("seed example", {"foo": "somevalue", "baz": 99}, "foo=somevalue&baz=99"),
            ("empty", {}, ""),
            ("list repeats the key", {"tag": ["a", "b"]}, "tag=a&tag=b"),
            ("empty list sends nothing", {"tag": []}, ""),
            ("booleans as JSON", {"on": True, "off": False}, "on=true&off=false"),
            ("null as empty", {"gone": None}, "gone="),
            ("float", {"ratio": 1.5}, "ratio=1.5"),
            ("nested object as JSON", {"n": {"a": 1}}, "n=%7B%22a%22%3A1%7D"),
            ("list items encoded one by one", {"ids": [1, None, [2]]}, "ids=1&ids=&ids=%5B2%5D"),
            ("reserved characters quoted", {"q": "a b&c=d"}, "q=a+b%26c%3Dd"),
            ("UTF-8", {"name": "é"}, "name=%C3%A9"),
        ]
        for name, params, expected in cases:
            self.assertEqual(encode_params(params), expected, name)

    def test_it_quotes_as_urlencode_does(self):
        # encode_params skips quote_plus for text that needs none: every
        # character that quote_plus keeps or changes must come out as it
        # would from urlencode.
        text = "".join(chr(c) for c in range(32, 0x250)) + "\t\n\r\x00\u2028\U0001f600"
        params = {c: c + "x" for c in text}
        params["long"] = text
        params["~keep_.-"] = "A-z_0.9~"
        expected = urlencode([(k, v) for k, v in params.items()])
        self.assertEqual(encode_params(params), expected)

    def test_numbers_are_written_as_json_writes_them(self):
        numbers = [0, -1, 10**30, 1.5, -0.0, 1e-7, 1e22, 123456789.123456789, True, False]
        for number in numbers:
            expected = urlencode({"n": json.dumps(number)})
            self.assertEqual(encode_params({"n": number}), expected, number)


class HorizonTests(unittest.TestCase):
    """A task may be scheduled at most 30 days ahead, as Cloud Tasks allows."""

    def test_delay_past_30_days_is_refused(self):
        with self.assertRaises(InvalidTask) as caught:
            parse({"url": HOOK, "delay": 30 * 86400 + 1})
        self.assertEqual(caught.exception.field, "delay")

    def test_a_delay_of_exactly_30_days_is_taken(self):
        self.assertEqual(parse({"url": HOOK, "delay": 30 * 86400}).due_at, NOW + 30 * 86400)

    def test_eta_past_30_days_is_refused(self):
        with self.assertRaises(InvalidTask) as caught:
            parse({"url": HOOK, "eta": NOW + 30 * 86400 + 1})
        self.assertEqual(caught.exception.field, "eta")


class LimitTests(unittest.TestCase):
    """Each limit is refused with a 4xx-worthy error naming it."""

    def refused(self, fields, field, code):
        with self.assertRaises(InvalidTask) as caught:
            parse({"url": HOOK, **fields})
        self.assertEqual((caught.exception.field, caught.exception.code), (field, code))
        return caught.exception

    def test_params_nested_past_the_limit(self):
        deep = {}
        for _ in range(40):
            deep = {"a": deep}
        error = self.refused({"params": json.dumps(deep)}, "params", "too_deep")
        self.assertIn("32", error.message)

    def test_json_nested_past_what_python_can_parse(self):
        self.refused({"params": "[" * 100_000 + "]" * 100_000}, "params", "invalid_field")

    def test_params_at_the_limit_are_fine(self):
        deep = "x"
        for _ in range(31):
            deep = {"a": deep}
        task = parse({"url": HOOK, "params": json.dumps(deep)})  # 32 levels: taken whole
        [(key, value)] = parse_qsl(task.body)
        self.assertEqual((key, json.loads(value)), ("a", deep["a"]))
        self.refused({"params": json.dumps({"a": deep})}, "params", "too_deep")

    def test_too_many_or_too_large_headers(self):
        many = {f"X-H{i}": "v" for i in range(101)}
        self.refused({"headers": json.dumps(many)}, "headers", "too_many")
        large = {"X-Big": "v" * (80 * 1024)}
        self.refused({"headers": json.dumps(large)}, "headers", "too_large")

    def test_headers_at_their_limits_are_taken(self):
        hundred = {f"X-H{i}": "v" for i in range(100)}
        self.assertEqual(parse({"url": HOOK, "headers": hundred}).headers, hundred)

        # 80 KiB of names and values together (two headers, so that the sum
        # is what counts): taken; one byte more is refused.
        def headers(size):
            return {"X-A": "a" * 1000, "X-Big": "v" * (size - 1000 - 3 - 5)}

        self.assertEqual(
            parse({"url": HOOK, "headers": headers(80 * 1024)}).headers["X-A"], "a" * 1000
        )
        self.refused({"headers": headers(80 * 1024 + 1)}, "headers", "too_large")

    def test_a_number_field_says_which_kind_of_number_it_wants(self):
        for field, value, wanted in [
            ("max_errors", 1.5, "max_errors must be a whole number"),
            ("max_errors", True, "max_errors must be a whole number"),
            ("timeout", True, "timeout must be a number"),
            ("delay", False, "delay must be a number"),
        ]:
            error = self.refused({field: value}, field, "invalid_field")
            self.assertEqual(error.message, wanted)


class HostileInputTests(SubmissionTestCase):
    """Input that used to be taken and then crash the node (a 500 from the
    API, or a delivery failing at every attempt until the task was dead)."""

    def test_lone_surrogates_are_refused_naming_the_field(self):
        # What JSON's "\\ud800" parses to: no UTF-8 form, so Redis, the
        # URL or the request headers could never carry it.
        lone = "\ud800"
        for name, fields, field, kwargs in [
            ("in the url", {"url": HOOK + lone}, "url", {}),
            ("in a params key", {"url": HOOK, "params": {lone: 1}}, "params", {}),
            ("in a params value", {"url": HOOK, "params": {"a": [lone]}}, "params", {}),
            ("in params' JSON text", {"url": HOOK, "params": '{"a": "\\ud800"}'}, "params", {}),
            ("in a header value", {"url": HOOK, "headers": {"X-A": lone}}, "headers", {}),
            ("in the json", {"url": HOOK, "json": {"a": lone}}, "json", {}),
            (
                "in the json's form text",
                {"url": HOOK, "json": '"\\ud800"'},
                "json",
                {"is_form": True},
            ),
            ("in the queue", {"url": HOOK, "queue": lone}, "queue", {}),
        ]:
            self.assertInvalid(name, fields, field, "invalid_encoding", **kwargs)

    def test_urls_treq_can_not_request_are_refused(self):
        self.assertInvalidCases(
            [
                (name, {"url": url}, "url")
                for name, url in [
                    ("empty port", "http://app:/x"),
                    ("empty port, upper-case scheme", "HTTP://app:"),
                    ("underscore in the host", "http://my_app/x"),
                    ("IPv6 literal", "http://[::1]:8080/x"),
                    ("host label starting with a hyphen", "http://-app/x"),
                    ("empty host label", "http://app..test/x"),
                    ("host label over 63 characters", f"http://{'a' * 64}.test/"),
                    ("%-escape in the host", "http://a%41.test/"),
                ]
            ]
        )

    def test_urls_treq_can_request_are_kept_as_given(self):
        for url in ["http://bücher.example/é?q=ü", "http://app.test./x"]:
            self.assertEqual(parse({"url": url}).url, url, url)

    def test_numbers_too_large_for_a_float_are_refused(self):
        huge = 10**400
        self.assertInvalidCases(
            [(field, {"url": HOOK, field: huge}, field) for field in ["delay", "eta", "timeout"]]
        )

    def test_method_must_be_ascii_text(self):
        self.assertInvalidCases(
            [
                (name, {"url": HOOK, "method": method}, "method")
                for name, method in [
                    ("long s, which upper-cases to S", "po\u017ft"),
                    ("st ligature, which upper-cases to ST", "po\ufb06"),
                    ("a number", 1),
                    ("true", True),
                    ("a list", ["POST"]),
                ]
            ]
        )

    def test_form_json_text_must_be_strict_json(self):
        for name, fields in [
            ("NaN in params", {"url": HOOK, "params": '{"a": NaN}'}),
            ("Infinity in json", {"url": HOOK, "json": "Infinity"}),
            ("1e999 in json", {"url": HOOK, "json": "[1e999]"}),
            ("-Infinity in headers", {"url": HOOK, "headers": '{"X-A": -Infinity}'}),
        ]:
            field = name.split()[-1]
            self.assertInvalid(name, fields, field, is_form=True)


class RequireTextTests(unittest.TestCase):
    def test_text_is_returned(self):
        value = {"a": ["é", 1, None]}
        self.assertIs(require_text("params", value), value)

    def test_a_lone_surrogate_is_found_at_any_depth_the_limit_allows(self):
        lone = "\udfff"
        for name, value in [
            ("a string", lone),
            ("after valid text", ["é", "\U0001f600", "a" + lone]),
            ("a key", {"a": 1, lone: 1}),
            ("a value", {"a": {"b": [None, 1.5, True, lone]}}),
            ("at the depth limit", self.nested([lone], submission.MAX_DEPTH - 1)),
            ("past the depth limit", self.nested([lone], submission.MAX_DEPTH + 3)),
            ("a key past the depth limit", self.nested({lone: 1}, submission.MAX_DEPTH + 3)),
        ]:
            with self.assertRaises(InvalidTask, msg=name) as caught:
                require_text("params", value)
            self.assertEqual(caught.exception.code, "invalid_encoding", name)
        for value in [self.nested(["é"], submission.MAX_DEPTH + 3), {"é": "\U0001f600"}]:
            self.assertIs(require_text("params", value), value)

    @staticmethod
    def nested(value: Any, levels: int) -> Any:
        for n in range(levels):
            value = [value] if n % 2 else {"k": value}
        return value

    def test_a_value_too_deep_to_check_is_refused(self):
        # json.loads may just manage a nesting that json.dumps, called a few
        # frames further down, can't.
        deep: list = []
        for _ in range(100_000):
            deep = [deep]
        with self.assertRaises(InvalidTask) as caught:
            require_text("params", deep)
        self.assertEqual((caught.exception.field, caught.exception.code), ("params", "too_deep"))


class StrictJsonTests(unittest.TestCase):
    def test_json_is_parsed(self):
        self.assertEqual(strict_json('{"a": [1, 2.5, null, "x"]}'), {"a": [1, 2.5, None, "x"]})
        self.assertEqual(strict_json(b"1e308"), 1e308)

    def test_what_is_not_json_is_a_value_error(self):
        for text in ["NaN", "[Infinity]", '{"a": -Infinity}', "1e999", "-1e999", "[" * 100_000]:
            with self.assertRaises(ValueError, msg=text[:20]):
                strict_json(text)


class UrlCheckCacheTests(unittest.TestCase):
    """Each distinct URL is checked once (hyperlink and IDNA are a third of
    an add's validation); a refused one is refused every time."""

    def setUp(self):
        submission._checked_url.cache_clear()
        self.addCleanup(submission._checked_url.cache_clear)
        self.checked = []
        requestable = submission._requestable
        self.patch(
            submission,
            "_requestable",
            lambda url, host: self.checked.append(url) or requestable(url, host),
        )

    def parse(self, url):
        return submission.parse_submission({"url": url}, new_id=lambda q: "t", now=0.0)

    def test_a_url_seen_before_is_not_checked_again(self):
        for url in ("http://app.test/a", "http://app.test/a", "http://app.test/b"):
            self.assertEqual(self.parse(url).url, url)
        self.assertEqual(self.checked, ["http://app.test/a", "http://app.test/b"])

    def test_a_refused_url_is_refused_every_time(self):
        for _ in range(2):
            with self.assertRaises(submission.InvalidTask):
                self.parse("http://my_app/x")
        self.assertEqual(self.checked, ["http://my_app/x"] * 2)
