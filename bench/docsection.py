"""Replaces (or appends) one "## Title" section of docs/BENCHMARKS.md."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


def replace_section(title, text):
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    m = re.search(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", doc, re.M | re.S)
    if m:
        doc = doc[:m.start()] + text.rstrip() + "\n\n" + doc[m.end():]
    else:
        doc = doc.rstrip() + "\n\n" + text.rstrip() + "\n"
    DOC.write_text(doc.rstrip() + "\n")
