"""Campaigns: one base run swept over config fields, emulator parameters and seeds, run on Dask.

:func:`load_campaign` reads a campaign file, :func:`expand` lists its cells, :func:`run_campaign`
runs them (``hil sweep``) and :func:`draw_figures` draws the results (``hil sweep show``).
"""

from hil.sweep.campaign import Campaign, Cell, expand, load_campaign, parse_campaign
from hil.sweep.cell import run_cell
from hil.sweep.figures import draw_figures
from hil.sweep.keys import cell_key
from hil.sweep.runner import CampaignReport, run_campaign

__all__ = [
    "Campaign", "CampaignReport", "Cell", "cell_key", "draw_figures", "expand", "load_campaign", "parse_campaign",
    "run_campaign", "run_cell",
]  # fmt: skip
