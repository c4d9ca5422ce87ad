"""Execute an analyst notebook against a lakehouse and render it to HTML (``moodlake notebook``).

The notebook runs in a fresh Jupyter kernel (nbclient) with this interpreter, with ``MOODLAKE_HOME``,
``MOODLAKE_ENV`` and any ``MOODLAKE__SECTION__KEY`` given in ``env``, so it reads the same lakehouse as
the command that runs it; the result, plots included, is written as one self-contained HTML file.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Mapping

from moodlake.config import repo_root

log = logging.getLogger(__name__)

DEFAULT_NOTEBOOK = "emotion_trends.ipynb"


def notebook_path(name: str = DEFAULT_NOTEBOOK) -> Path:
    path = repo_root() / "notebooks" / name
    if not path.exists():
        raise FileNotFoundError(f"no notebook {path}")
    return path


def render_notebook(path: str | Path, html: str | Path, env: Mapping[str, str] | None = None,
                    timeout_s: int = 900) -> Path:
    """Execute the notebook at ``path`` top to bottom and write it, with its outputs, to ``html``.

    Raises ``nbclient.exceptions.CellExecutionError`` (with the cell and its traceback) when a cell fails.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    path, html = Path(path), Path(html)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    saved = dict(os.environ)
    start = time.monotonic()
    try:
        os.environ.update(env or {})
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    body, _ = HTMLExporter().from_notebook_node(nb)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(body, encoding="utf-8")
    log.info("executed %s in %.0f s; rendered to %s", path.name, time.monotonic() - start, html)
    return html
