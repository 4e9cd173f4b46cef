"""dmkit benchmarks: throughput of dmkit stacks against the raw image, in one run.

Run ``python -m benchmarks`` (``make bench``); it prints one JSON document on stdout and
progress on stderr.  ``python -m benchmarks --help`` lists the options, ``--list`` the cases.

Layout:

- :mod:`benchmarks.registry` — the case registry: a case is a setup function that returns
  a :class:`~benchmarks.registry.Workload` (the measured work and its raw baseline, each a
  callable returning the bytes it processed);
- :mod:`benchmarks.harness` — the shared timing harness (warm-up, interleaved repeats,
  best and median) and machine information;
- :mod:`benchmarks.raw` — the raw baselines (``os.preadv``/``os.pwrite`` on image files) and
  scratch image preparation;
- :mod:`benchmarks.cases` — the cases, one module per family (dm targets now; peer tools
  such as qemu-img and nbdkit later, see :mod:`benchmarks.cases.peers`);
- :mod:`benchmarks.runner` — options, case selection, the JSON report.
"""

__all__: list[str] = []
