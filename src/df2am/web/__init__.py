"""``df2am serve``: a small local web app (FastAPI + one static page) over the library.

See :mod:`df2am.web.app`. Needs the ``web`` extra (``pip install 'df2am[web]'``).
"""
