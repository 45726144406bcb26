"""Sphinx configuration of jaxgrad's documentation site.

``make docs`` builds it with every warning an error (``sphinx-build -W``) after
generating the guide's tables (``docs/_scripts/guide_tables.py``) and executes
the notebooks (jupytext percent scripts in ``notebooks/``) at full size.
``tests/test_docs.py`` builds it the same way, with the notebooks unexecuted
(the suite executes them itself, at reduced size) and the tables from a
reduced study.
"""

import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_scripts"))
sys.path.insert(0, str(HERE.parent))

import jaxgrad  # noqa: E402

project = "jaxgrad"
author = "the jaxgrad authors"
copyright = "2026, the jaxgrad authors"
release = version = jaxgrad.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "myst_nb",
]

# The notebooks are jupytext percent scripts; myst-nb reads them through jupytext.
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".py": "myst-nb"}
exclude_patterns = ["_build", "_scripts", "_generated", "conf.py", "**/__pycache__"]
root_doc = "index"

# Notebooks run at full size in their own temporary folder (they write figures to
# the working directory); an error in one fails the build. There is no time limit:
# a full-size notebook takes minutes on two CPU cores.
nb_execution_mode = os.environ.get("JAXGRAD_DOCS_EXECUTE", "force")
nb_execution_in_temp = True
nb_execution_timeout = -1
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_typehints = "none"  # the Args sections say what each argument is
autodoc_member_order = "bysource"
autodoc_default_options = {"exclude-members": "__init__, __new__"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = False

html_theme = "furo"
html_title = f"jaxgrad {release}"
suppress_warnings = ["myst.header"]
