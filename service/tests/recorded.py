"""Output recorded from the real tools in the kernel VM (scripts/kernel-vm.sh, `make
kernel-vm-record`; tests/kernel-vm/record.sh runs the commands).

A fixture directory holds ``NAME.out`` (stdout) and ``NAME.err`` (stderr) byte for byte, and
``commands.tsv``: one line per run, ``NAME<TAB>exit status<TAB>command line``.  ``step(NAME)``
gives the (command, rc, stdout, stderr) a replaying runner expects, so a test fails when the
code runs anything but the exact recorded command."""
import os
import shlex


class Recording:
    def __init__(self, directory):
        self.directory = directory
        self.runs = {}
        with open(os.path.join(directory, "commands.tsv")) as f:
            for line in f:
                name, rc, cmd = line.rstrip("\n").split("\t", 2)
                self.runs[name] = (shlex.split(cmd), int(rc))

    def _read(self, name, ext):
        assert name in self.runs, "no recording %s in %s" % (name, self.directory)
        path = os.path.join(self.directory, name + ext)
        if not os.path.exists(path):
            return ""
        with open(path) as f:
            return f.read()

    def argv(self, name):
        return self.runs[name][0]

    def rc(self, name):
        return self.runs[name][1]

    def out(self, name):
        return self._read(name, ".out")

    def err(self, name):
        return self._read(name, ".err")

    def step(self, name):
        """(command line, rc, stdout, stderr) for test_backends_zfs.Replay."""
        return (" ".join(self.argv(name)), self.rc(name), self.out(name), self.err(name))
