"""Campaigns: one base run swept over config fields, emulator parameters and seeds, run on Dask.

:func:`hil.sweep.campaign.load_campaign` reads a campaign file, :func:`hil.sweep.campaign.expand`
lists its cells, :func:`hil.sweep.runner.run_campaign` runs them (``hil sweep``) and
:func:`hil.sweep.figures.draw_figures` draws the results (``hil sweep show``). Nothing is imported
here, so ``hil`` does not load Dask, pandas or matplotlib until a campaign needs them.
"""
