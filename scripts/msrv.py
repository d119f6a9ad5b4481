#!/usr/bin/env python3
"""Checks that every workspace member's `rust-version` is at least what building it needs.

The lower bounds checked here are the ones cargo itself enforces: the `rust-version` of every
locked package the member builds (its normal and build dependencies, its own dev-dependencies,
transitively, for this host), and the edition of the member and of each such package. What the
member's own code needs from std is clippy's `incompatible_msrv` lint, run by scripts/test.sh.

A member without `rust-version` fails: then nothing is checked at all (clippy's lint is silent
when no MSRV is known), which is how a wrong claim went unnoticed before.

Usage: scripts/msrv.py (from anywhere in the workspace). Exits 1 when a claim is too low.
"""

import json
import subprocess
import sys

# First release of each edition.
EDITIONS = {"2015": "1.0", "2018": "1.31", "2021": "1.56", "2024": "1.85"}


def edition_version(package):
    """The Rust version a package's edition needs; an edition this script does not know is an
    error that says so (add it to EDITIONS)."""
    edition = package["edition"]
    if edition not in EDITIONS:
        sys.exit(f"msrv.py: {package['name']} uses edition {edition}, unknown to this script; add it to EDITIONS")
    return version(EDITIONS[edition])


def version(text):
    """'1.85' or '1.85.0' as a comparable (major, minor, patch) tuple."""
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def host_triple():
    for line in subprocess.check_output(["rustc", "-vV"], text=True).splitlines():
        if line.startswith("host: "):
            return line.split(" ", 1)[1]
    sys.exit("msrv.py: cannot tell the host triple from `rustc -vV`")


def built_packages(nodes, member):
    """Ids of the packages building `member` (tests included) compiles, `member` excluded."""
    seen = set()
    stack = [(member, True)]
    while stack:
        node, is_member = stack.pop()
        for dep in nodes[node]["deps"]:
            kinds = {k["kind"] for k in dep["dep_kinds"]}
            # A dependency's own dev-dependencies are never built for us.
            if not is_member and kinds == {"dev"}:
                continue
            if dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                stack.append((dep["pkg"], False))
    return seen


def main():
    metadata = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", host_triple()]
        )
    )
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    failed = False
    for member in metadata["workspace_members"]:
        package = packages[member]
        name = package["name"]
        claim = package.get("rust_version")
        if not claim:
            print(f"msrv.py: {name} has no rust-version (missing `rust-version.workspace = true`?)")
            failed = True
            continue
        # Declared rust-versions first: on a tie, `max` names the first, the clearer reason.
        needs = []
        editions = [(edition_version(package), f"edition {package['edition']}")]
        for pkg_id in sorted(built_packages(nodes, member)):
            dep = packages[pkg_id]
            label = f"{dep['name']} {dep['version']}"
            editions.append((edition_version(dep), f"{label} (edition {dep['edition']})"))
            if dep.get("rust_version"):
                needs.append((version(dep["rust_version"]), label))
        need, why = max(needs + editions, key=lambda item: item[0])
        shown = ".".join(str(p) for p in need)
        if version(claim) < need:
            print(f"msrv.py: {name} claims rust-version {claim} but {why} needs {shown}")
            failed = True
        else:
            print(f"msrv.py: {name} rust-version {claim} >= {shown}, the most its dependencies need ({why})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
