"""edgepack.logutil.quiet: a library's records are silenced for a block; nobody else's, and no
level outlives the block (compiles in threads of one process must not change each other's logging)."""

from __future__ import annotations

import logging
import os
import threading

from edgepack.logutil import quiet


def _root_record(path: str, level=logging.WARNING) -> logging.LogRecord:
    """A record as `logging.warning(...)` called from the file `path` makes it."""
    return logging.getLogger().makeRecord("root", level, path, 1, "msg", (), None)


def test_named_loggers_quieted_and_restored_root_untouched():
    root, lib = logging.getLogger(), logging.getLogger("edgepack_test_lib")
    lib.setLevel(logging.INFO)
    root_level, root_filters = root.level, list(root.filters)
    with quiet("edgepack_test_lib"):
        assert lib.level == logging.ERROR and not logging.getLogger("edgepack_test_lib.sub").isEnabledFor(logging.WARNING)
        assert root.level == root_level
    assert lib.level == logging.INFO and root.filters == root_filters


def test_root_logger_records_dropped_only_from_the_package():
    root = logging.getLogger()
    inside = os.sep.join(["", "site", "edgepack_test_lib", "quantize.py"])
    elsewhere = os.sep.join(["", "site", "userpkg", "edgepack_test_lib.py"])
    with quiet("edgepack_test_lib"):
        assert not root.filter(_root_record(inside))
        assert root.filter(_root_record(inside, logging.ERROR))
        assert root.filter(_root_record(elsewhere))
    assert root.filter(_root_record(inside))


def test_overlapping_threads_restore_the_level_found_first():
    lib = logging.getLogger("edgepack_test_lib2")
    lib.setLevel(logging.DEBUG)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def a():
        with quiet("edgepack_test_lib2"):
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with quiet("edgepack_test_lib2"):
            b_in.set()
            a_out.wait(5)
            seen.append(lib.level)  # still quiet while b runs, after a left

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == [logging.ERROR] and lib.level == logging.DEBUG
