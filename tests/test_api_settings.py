"""``PATCH /queues/<q>``: a queue's own settings, checked, stored, shown in
``GET /queues/<q>``; bad values are a 400 naming the field."""

from tests.test_api import HOOK, APITestCase


class QueueSettingsTests(APITestCase):
    def patch(self, body, queue="default", **kw):
        return self.call("PATCH", f"/queues/{queue}", json=body, **kw)

    def test_patch_stores_the_settings_and_answers_with_them(self):
        response, body = self.patch({"rate": 5, "concurrency": 3, "timeout": 2.5})
        self.assertEqual(response.code, 200)
        expected = {"rate": 5.0, "concurrency": 3, "timeout": 2.5}
        self.assertEqual(body, {"name": "default", "settings": expected})
        self.assertEqual(self.successResultOf(self.store.get_settings("default")), expected)
        self.assertEqual(self.store.settings_told, ["default"], "the nodes are told")

    def test_get_queue_shows_them_and_null_clears_one(self):
        self.add(data=dict(url=HOOK))
        self.patch({"max_errors": 4, "min_delay": 2})
        response, body = self.call("GET", "/queues/default")
        self.assertEqual(body["settings"], {"max_errors": 4, "min_delay": 2.0})
        _, body = self.patch({"max_errors": None})
        self.assertEqual(body["settings"], {"min_delay": 2.0})
        _, body = self.call("GET", "/queues/default")
        self.assertEqual(body["settings"], {"min_delay": 2.0})

    def test_a_queue_with_no_settings_shows_an_empty_object(self):
        self.add(data=dict(url=HOOK))
        _, body = self.call("GET", "/queues/default")
        self.assertEqual(body["settings"], {})

    def test_a_queue_set_up_before_its_first_task_is_found(self):
        self.assertError(*self.call("GET", "/queues/later"), 404, "queue")
        self.patch({"concurrency": 2}, queue="later")
        response, body = self.call("GET", "/queues/later")
        self.assertEqual((response.code, body["settings"]), (200, {"concurrency": 2}))

    def test_bad_values_are_refused_naming_the_field_and_change_nothing(self):
        self.patch({"rate": 1})
        for bad, field in [
            ({"rate": -1}, "rate"),
            ({"concurrency": 0}, "concurrency"),
            ({"concurrency": "many"}, "concurrency"),
            ({"host_concurrency": 1.5}, "host_concurrency"),
            ({"max_errors": 0}, "max_errors"),
            ({"min_delay": -1}, "min_delay"),
            ({"max_delay": True}, "max_delay"),
            ({"timeout": 0}, "timeout"),
            ({"max_age": -5}, "max_age"),
            ({"rate": 2, "speed": 1}, "speed"),
            ({}, "body"),
        ]:
            with self.subTest(body=bad):
                self.assertError(*self.patch(bad), 400, field)
        self.assertEqual(self.successResultOf(self.store.get_settings("default")), {"rate": 1.0})

    def test_a_body_that_is_not_a_json_object_is_refused(self):
        for raw in (b"[1]", b"rate=1", b"{"):
            with self.subTest(raw=raw):
                response, body = self.call("PATCH", "/queues/default", data=raw)
                self.assertError(response, body, 400, "body")

    def test_a_bad_queue_name_is_refused(self):
        self.assertError(*self.patch({"rate": 1}, queue="a.b"), 400, "queue")

    def test_redis_down_is_a_503(self):
        self.store.available = False
        response, body = self.patch({"rate": 1})
        self.assertError(response, body, 503)
