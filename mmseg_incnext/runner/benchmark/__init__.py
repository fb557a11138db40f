"""The speed and memory benchmark behind ``tools/benchmark.py``, one concern per module.

:mod:`.specs` what a contender and a table are, :mod:`.contenders` the models compared,
:mod:`.rounds` the order of the timed rounds, :mod:`.memory` peak memory, :mod:`.timing`
the timed steps, :mod:`.report` the tables and the figures derived from them, and
:mod:`.cli` the command line. Only the tool imports this package (``import mmseg_incnext``
does not); it needs timm and mmpretrain (``pip install -e .[benchmark]``).
"""
