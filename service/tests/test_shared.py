"""The service's copies of the collection's shared code are the same bytes as their originals in
plugins/module_utils/ (run scripts/sync-shared.sh after editing an original), and the service's
source holds no symlink (the wheel, the role's install hash and other tools would miss it)."""
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
SHARED = os.path.join(TOP, "service", "src", "pvesan_service", "shared")


@pytest.mark.parametrize("name", ["_tgt.py", "_lio.py", "_pvesan_client.py"])
def test_copy_is_identical(name):
    with open(os.path.join(TOP, "plugins", "module_utils", name), "rb") as original, \
            open(os.path.join(SHARED, name), "rb") as copy:
        assert copy.read() == original.read(), "%s differs from plugins/module_utils/%s: run scripts/sync-shared.sh" % (name, name)


def test_no_symlinks_in_the_service_source():
    links = [os.path.join(d, f) for d, dirs, files in os.walk(os.path.join(TOP, "service", "src"))
             for f in files + dirs if os.path.islink(os.path.join(d, f))]
    assert links == []


def test_a_changed_shared_file_changes_the_roles_install_id(tmp_path):
    """The volume_service role reinstalls the service when this id changes (tasks/install.yml)."""
    import shutil
    import subprocess
    script = os.path.join(TOP, "roles", "volume_service", "files", "source-hash.sh")
    source = tmp_path / "service"
    shutil.copytree(os.path.join(TOP, "service"), source, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info"))

    def install_id():
        return subprocess.run(["bash", script, str(source)], capture_output=True, text=True, check=True).stdout.strip()

    before = install_id()
    assert len(before) == 16 and install_id() == before
    with open(source / "src" / "pvesan_service" / "shared" / "_tgt.py", "a") as fh:
        fh.write("# a fix\n")
    assert install_id() != before
