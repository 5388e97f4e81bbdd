"""The board in a lab's own stack: a QCoDeS instrument (:mod:`hil.adapters.qcodes`, extra
``[qcodes]``) and an ophyd-async device for Bluesky plans (:mod:`hil.adapters.bluesky`, extra
``[bluesky]``). Each wraps an open :class:`drivers.Board`: every request still goes through its
safety checks, and closing the adapter idles and closes the board."""
