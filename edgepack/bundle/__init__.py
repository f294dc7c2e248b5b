"""Deployment bundles: one artifact with everything a device needs to run it and to prove it runs
right (`edgepack package`), and the graded check of a bundle on a device (`edgepack verify`).

    package(OUT, "model.tar.gz")            # or a folder; --artifact BACKEND picks among several
    verdict = verify("model.tar.gz", device)  # verdict.exit_code: 0, 4 structure, 5 hashes, 6 device, 7 golden
"""

from edgepack.bundle.pack import Packaged, package
from edgepack.bundle.verify import EXIT, BundleRefused, Verdict, checked, is_bundle, verify

__all__ = ["EXIT", "BundleRefused", "Packaged", "Verdict", "checked", "is_bundle", "package", "verify"]
