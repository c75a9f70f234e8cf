"""The random part of task ids (torque/tokens.py)."""

import os
import re

from twisted.trial import unittest

from torque import tokens


class TokenTests(unittest.TestCase):
    def test_tokens_are_twenty_url_safe_characters_and_never_repeat(self):
        drawn = [tokens.token() for _ in range(3 * tokens.BATCH + 7)]  # several blocks
        self.assertTrue(all(re.fullmatch(r"[A-Za-z0-9_-]{20}", t) for t in drawn), drawn[:3])
        self.assertEqual(len(set(drawn)), len(drawn))

    def test_a_forked_child_does_not_hand_out_its_parents_tokens(self):
        tokens.token()  # a block is under way in the parent
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next token, then out at once
            os.write(write, tokens.token().encode())
            os._exit(0)
        os.close(write)
        child = os.read(read, 100).decode()
        os.close(read)
        os.waitpid(pid, 0)
        self.assertEqual(len(child), 20)
        self.assertNotEqual(child, tokens.token(), "the parent's next token")
