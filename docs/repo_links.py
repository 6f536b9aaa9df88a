"""MkDocs hook: links from the documentation to files of the repository outside ``docs/``.

The pages link to ``../benchmarks/RESULTS.md`` or ``../notebooks/01_audit_a_model.ipynb`` as
relative paths, so the links work where the Markdown is read on its own (a repository
browser, an editor). MkDocs only knows the files under ``docs/`` and would call those links
broken. This hook adds each linked repository file to the site as a plain copy under
``repository/`` (never rendered: a notebook stays a notebook, a Markdown file stays text), so
the link works in the built site too, offline. A link to a file that does not exist is left
alone, and the strict build fails on it as on any broken link.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel

SITE_FOLDER = "repository"
LINK = re.compile(r"\]\((\.\./[^)\s#]+)(?:#[^)\s]*)?\)")


class RepositoryFile(File):
    """A file of the repository copied into the site as it is, never rendered as a page."""

    def is_documentation_page(self) -> bool:
        return False


def on_files(files: Files, config: MkDocsConfig) -> Files:
    docs = Path(config.docs_dir).resolve()
    root = docs.parent
    for page in [f for f in files if f.is_documentation_page()]:
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        for link in LINK.findall(text):
            _add(files, config, page.src_uri, link, docs=docs, root=root)
    return files


def _add(
    files: Files, config: MkDocsConfig, page_uri: str, link: str, *, docs: Path, root: Path
) -> None:
    """Add the repository file ``link`` (relative to the page) unless it is missing, inside
    ``docs/``, outside the repository or already added."""
    src_uri = _normalised(PurePosixPath(page_uri).parent / link)
    target = (docs / src_uri).resolve()
    inside_docs = target.is_relative_to(docs)
    if inside_docs or not target.is_relative_to(root) or not target.is_file():
        return
    if files.get_file_from_path(src_uri) is not None:
        return
    dest_uri = f"{SITE_FOLDER}/{target.relative_to(root).as_posix()}"
    files.append(
        RepositoryFile(
            src_uri,
            config.docs_dir,
            config.site_dir,
            config.use_directory_urls,
            dest_uri=dest_uri,
            inclusion=InclusionLevel.NOT_IN_NAV,
        )
    )


def _normalised(path: PurePosixPath) -> str:
    """``path`` with ``a/../`` folded, as MkDocs resolves a link (leading ``../`` kept)."""
    parts: list[str] = []
    for part in path.parts:
        if part == ".." and parts and parts[-1] != "..":
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/".join(parts)
