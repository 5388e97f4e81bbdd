"""A chip's digital twin: characterize once, fit every emulator parameter, rehearse on the twin.

- :mod:`hil.twin.suite_runner`: runs the set of procedures a twin needs on one board, one run
  file each, resumable (``hil characterize all``);
- :mod:`hil.twin.fit`: fits the emulator's parameters from those files and writes the TOML file
  ``python -m mock_hardware serve --params`` and ``emulator://?params=`` load (``hil twin fit``);
- :mod:`hil.twin.check`: characterizes a board again and compares it with a twin (``hil twin check``);
- :mod:`hil.twin.round_trip`: a random chip drawn across physical ranges, characterized, fitted and
  compared with its truth (the round-trip test and ``benchmarks/twin_round_trip.py``).

docs/twin.md describes the workflow.
"""
