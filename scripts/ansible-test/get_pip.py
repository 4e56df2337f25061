"""Stand-in for the pip bootstrap script that ansible-test downloads for ``--venv``.

ansible-test fetches get-pip.py from a host that is unreachable on our build machines (only the
package registries are), so ``make setup`` installs this file in its cache instead. Like the real
script it installs the pip release ansible-test asks for, with the arguments it passes, but it
starts from the pip wheel that CPython's ensurepip carries and takes the release from the package
index.
"""

import ensurepip
import glob
import os
import sys

bundled = glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl"))
if not bundled:
    sys.exit("get_pip stand-in: this Python has no ensurepip wheel to start from")
sys.path.insert(0, bundled[0])

from pip._internal.cli.main import main  # noqa: E402  (importable only after the path change)

# get-pip.py's own flags: without them it would also install setuptools and wheel, which this
# stand-in never does, so they can be dropped.
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall"] + args))
