"""Lay out a PEP 503 "simple" package index from a directory of wheels, for the lab's mirror.

    simple_index.py WHEEL_DIR OUT_DIR [--exclude NAME]... [--decoy NAME==VERSION]...

OUT_DIR gets packages/<wheel files> and simple/<normalized project>/index.html with a link per
file (and its sha256, which pip checks); any static HTTP server can serve it.  --exclude leaves
a project out (the service's own wheel: the role copies it, the index must not provide it).
--decoy adds an empty wheel of that name and version, as a package squatting the name on a
public index would: a role that installed the service by name would pick it (a higher version)
and break, one that installs its own wheel file is not affected.
"""
import argparse
import base64
import hashlib
import html
import os
import re
import shutil
import sys
import zipfile


def normalize(name):
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def record_hash(data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


def make_decoy(directory, spec):
    """Write an empty but valid wheel NAME-VERSION-py3-none-any.whl; return its file name."""
    name, version = spec.split("==", 1)
    stem = re.sub(r"[-_.]+", "_", name)
    info = "%s-%s.dist-info" % (stem, version)
    files = {
        info + "/METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: decoy\n" % (name, version),
        info + "/WHEEL": "Wheel-Version: 1.0\nGenerator: simple_index.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join("%s,%s,%d\n" % (path, record_hash(text.encode()), len(text.encode()))
                     for path, text in files.items()) + info + "/RECORD,,\n"
    files[info + "/RECORD"] = record
    filename = "%s-%s-py3-none-any.whl" % (stem, version)
    with zipfile.ZipFile(os.path.join(directory, filename), "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)
    return filename


def page(title, links):
    body = "".join('    <a href="%s">%s</a><br/>\n' % (html.escape(href), html.escape(text)) for href, text in links)
    return ("<!DOCTYPE html>\n<html>\n  <head><meta name=\"pypi:repository-version\" content=\"1.0\">"
            "<title>%s</title></head>\n  <body>\n%s  </body>\n</html>\n" % (html.escape(title), body))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("wheel_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--exclude", action="append", default=[], help="project to leave out")
    ap.add_argument("--decoy", action="append", default=[], help="NAME==VERSION of an empty wheel to add")
    args = ap.parse_args(argv)

    excluded = {normalize(n) for n in args.exclude}
    packages = os.path.join(args.out_dir, "packages")
    if os.path.isdir(args.out_dir):
        shutil.rmtree(args.out_dir)
    os.makedirs(packages)

    projects = {}
    for filename in sorted(os.listdir(args.wheel_dir)):
        if not filename.endswith(".whl"):
            continue
        project = normalize(filename.split("-", 1)[0])
        if project in excluded:
            continue
        shutil.copy2(os.path.join(args.wheel_dir, filename), packages)
        projects.setdefault(project, []).append(filename)
    for spec in args.decoy:
        filename = make_decoy(packages, spec)
        projects.setdefault(normalize(spec.split("==", 1)[0]), []).append(filename)

    for project, filenames in projects.items():
        links = []
        for filename in filenames:
            with open(os.path.join(packages, filename), "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
            links.append(("../../packages/%s#sha256=%s" % (filename, sha), filename))
        os.makedirs(os.path.join(args.out_dir, "simple", project))
        with open(os.path.join(args.out_dir, "simple", project, "index.html"), "w") as f:
            f.write(page("Links for " + project, links))
    with open(os.path.join(args.out_dir, "simple", "index.html"), "w") as f:
        f.write(page("Simple index", [(p + "/", p) for p in sorted(projects)]))
    print("%d projects, %d files in %s" % (len(projects), sum(map(len, projects.values())), args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
