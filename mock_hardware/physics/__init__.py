"""Device and array physics of the emulated 1T1R crossbar.

- ``cells``: per-cell (device-to-device) parameters and defects, drawn once from the seed
- ``switching``: what one SET, RESET or FORM pulse does to a cell
- ``iv``: the cell's current-voltage curve
- ``retention``: conductance drift after programming
- ``line_resistance``: the resistive network of the row and column lines
- ``noise``: a fast Gaussian sampler for read noise
- ``clock``: simulated or wall-clock time

``mock_hardware.array_model.CrossbarArray`` puts them together behind the firmware's interface.
"""
