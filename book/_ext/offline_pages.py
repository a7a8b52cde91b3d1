"""Sphinx extension: keep the book's pages self-contained.

Jupyter Book 1.x always loads ``sphinx_thebe``, even with ``launch_buttons.thebe: false``.
Its page scripts point at unpkg.com and are registered once per read pass, so a page can
declare ``const THEBE_JS_URL`` twice, a SyntaxError in the browser. The book runs no live
kernels, so the thebe scripts are removed from every page.
"""


def _drop_thebe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    kept = [s for s in scripts
            if "thebe" not in str(s).lower()
            and "THEBE" not in str(getattr(s, "attributes", {}).get("body", ""))]
    scripts[:] = kept


def setup(app):
    app.connect("html-page-context", _drop_thebe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
