"""The HTML page ``dvc plots show`` writes, with Vega bundled so that the charts render offline.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN, so on a cluster node or any machine
without internet the loss and accuracy charts are blank. The project's ``.dvc/config`` points
``plots.html_template`` at the page written here, whose scripts are the bundle of those three libraries
that ``vl-convert-python`` ships (a maintained package: nothing is copied into labline's source). The page
has no ``{scripts}`` placeholder, so DVC adds no CDN ``<script>`` tags.
"""

from __future__ import annotations

from pathlib import Path

# DVC's templates declare Vega-Lite 5 specs; the newest 5.x that vl-convert bundles.
VEGA_LITE = "5.21"
TEMPLATE = ".dvc/labline-plots.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>labline: DVC plots</title>
    <script>
{bundle}
    </script>
    <style>
        body {{ font-family: sans-serif; margin: 24px; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def write_template(root: Path) -> Path:
    """Write the offline page at ``<root>/.dvc/labline-plots.html`` (what ``.dvc/config`` names)."""
    import vl_convert

    page = PAGE.format(bundle=vl_convert.javascript_bundle(vl_version=VEGA_LITE))
    path = root / TEMPLATE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
