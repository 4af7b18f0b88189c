"""Fail when the current environment holds a GPL-licensed distribution (GPL/AGPL; LGPL is fine for Apache-2.0
by dynamic linking). Run in an environment made by a plain ``pip install .``: it then proves that the default
install pulls nothing that contradicts the declared Apache-2.0 licence. Prints every distribution's licence."""

from __future__ import annotations

import re
import sys
from importlib import metadata

# Distributions whose metadata does not say it, or says more than one licence: what applies, and why it is fine
# (or not). cvxopt's metadata names no licence; its LICENSE file is GPL-3.0-or-later. text-unidecode (pulled by
# prefect through python-slugify) is dual-licensed like Perl: Artistic OR GPL-2.0-or-later; the Artistic licence
# is compatible with Apache-2.0 and is the one it is used under.
KNOWN = {
    "cvxopt": "GPL-3.0-or-later (LICENSE file; the metadata names none)",
    "text-unidecode": "Artistic-1.0 OR GPL-2.0-or-later: used under the Artistic licence",
}
GPL = re.compile(r"(?<![LA])GPL|GNU General Public|GNU Affero", re.IGNORECASE)
LGPL = re.compile(r"LGPL|Lesser General Public|Library General Public", re.IGNORECASE)


def licence_of(dist: metadata.Distribution) -> str:
    meta = dist.metadata
    if (meta["Name"] or "").lower() in KNOWN:
        return KNOWN[meta["Name"].lower()]
    parts = [meta.get("License-Expression") or "", (meta.get("License") or "").splitlines()[0] if meta.get("License") else ""]
    parts += [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return "; ".join(p for p in dict.fromkeys(parts) if p) or "?"


def is_gpl(text: str) -> bool:
    """GPL or AGPL and not only LGPL (e.g. 'GPL-3.0-or-later' yes, 'LGPL-2.1' no); a dual licence used under its
    other, permissive option ('... OR GPL...: used under ...') no."""
    if "used under the" in text:
        return False
    return bool(GPL.search(LGPL.sub("", text)))


def main() -> int:
    bad = []
    for dist in sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name, text = dist.metadata["Name"], licence_of(dist)
        print(f"{name:32s} {dist.version:14s} {text[:100]}")
        if is_gpl(text):
            bad.append(f"{name} {dist.version}: {text}")
    if bad:
        print("\nGPL-licensed distributions in this environment (the project is Apache-2.0):\n  " + "\n  ".join(bad))
        return 1
    print("\nno GPL-licensed distribution")
    return 0


if __name__ == "__main__":
    sys.exit(main())
