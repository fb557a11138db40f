"""What the command-line tools (``tools/``) share: argument parsing, reading a run's config,
the process group, device adaptation, the data check before a run, FLOP counting, image
overlays and the benchmark harness. ``import mmseg_incnext`` does not import it."""
