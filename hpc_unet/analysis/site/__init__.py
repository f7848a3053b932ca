"""The report as an offline file set a browser opens from disk: ``analysis/report.html`` (the written
report) and ``analysis/explore/`` (a sortable, filterable run table with parallel coordinates, learning
curves grouped by any setting, importance and slice plots, a gallery of the recommended runs' worst
patches, and one page per run). plotly draws the figures; its library is stored once, in explore/.
"""

from hpc_unet.analysis.site.build import write_site

__all__ = ["write_site"]
