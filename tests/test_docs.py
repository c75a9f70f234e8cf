"""README.rst and the pages of docs/: each builds with docutils without a
warning, and every relative link in them leads to a file that exists."""

from __future__ import annotations

import glob
import io
import os
from urllib.parse import urlsplit

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.rst"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.rst")))]


def doctree(path: str):
    """Parse ``path``; a warning or worse raises ``SystemMessage``."""
    from docutils.core import publish_doctree

    with open(path, encoding="utf-8") as f:
        source = f.read()
    return publish_doctree(
        source,
        source_path=path,
        settings_overrides={
            "report_level": 2,
            "halt_level": 2,
            "warning_stream": io.StringIO(),
            "file_insertion_enabled": False,
            "raw_enabled": False,
        },
    )


def relative_links(tree) -> list[str]:
    from docutils import nodes

    links = []
    for node in tree.findall(nodes.reference):
        uri = node.get("refuri")
        if uri and not urlsplit(uri).scheme and not uri.startswith("#"):
            links.append(uri)
    for node in tree.findall(nodes.image):
        links.append(node["uri"])
    return links


class DocsTests(unittest.TestCase):
    def test_there_are_pages_beyond_the_readme(self):
        names = {os.path.basename(p) for p in PAGES}
        for page in (
            "operating.rst",
            "security.rst",
            "clients.rst",
            "redis-keys.rst",
            "production.rst",
            "troubleshooting.rst",
            "comparison.rst",
            "development.rst",
        ):
            self.assertIn(page, names)

    def test_every_page_builds_without_warnings(self):
        from docutils.utils import SystemMessage

        for path in PAGES:
            try:
                doctree(path)
            except SystemMessage as e:
                self.fail(f"{os.path.relpath(path, ROOT)}: {e}")

    def test_every_relative_link_resolves(self):
        for path in PAGES:
            for link in relative_links(doctree(path)):
                target = os.path.normpath(os.path.join(os.path.dirname(path), link.split("#")[0]))
                self.assertTrue(
                    os.path.exists(target), f"{os.path.relpath(path, ROOT)} links to {link}"
                )

    def test_the_readme_links_every_page_of_docs(self):
        linked = {
            os.path.normpath(os.path.join(ROOT, link.split("#")[0]))
            for link in relative_links(doctree(PAGES[0]))
        }
        for path in PAGES[1:]:
            self.assertIn(path, linked, f"README.rst does not link {os.path.relpath(path, ROOT)}")

    def test_a_broken_link_is_found(self):
        # The checks above must be able to fail: a page with a dead link.
        page = self.mktemp() + ".rst"
        with open(page, "w") as f:
            f.write("Title\n=====\n\nSee `nowhere <no/such/page.rst>`_.\n")
        self.assertEqual(relative_links(doctree(page)), ["no/such/page.rst"])
