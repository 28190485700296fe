"""The sweep report, in the order it is made: data -> figures -> a template.

``data``
    :class:`SweepData`: what the page shows, read from the output's attributes in one pass
    (results, failures, the plan, versions), and the h5guard check verdict.
``flow``
    PyWake: the site geometry, the dominant wind and the flow map of a layout.
``figures``
    matplotlib: the layout, axes and comparison figures, and writing them as PNGs.
``comparison``
    The best layout of an IEA37 farm beside the published par4 and par12 layouts.
``html``
    The page: a Jinja2 template (``templates/report.html.j2``, autoescaped) and its CSS
    (``templates/report.css``, inlined so the page opens from disk).

The public entry points (:func:`optimizer.report.write_report`,
:func:`optimizer.report.write_layout_plot`) put these together in :mod:`optimizer.report`.
"""
