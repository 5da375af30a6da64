"""The plugin API of harness, version 2: one hook per kind of part.

A plugin is a module that implements any of the hooks below, marked with :data:`harness.hookimpl`,
and is announced through the ``harness`` entry-point group of its distribution::

    # pyproject.toml of a third-party package
    [project.entry-points.harness]
    my_plugin = "my_package.harness_plugin"

Every hook receives a ``register`` callable and calls it once per part::

    register(name: str, factory: Callable[..., Part]) -> None

``name`` is what specs use (``descriptor: {name: my_descriptor, ...}``); it must be unique within its
kind. ``factory`` is a class or function; the runner calls it with the spec's parameters as keyword
arguments (everything in the spec mapping except ``name``). The factory's signature *is* the parameter
schema: unknown or missing parameters, and values that do not match the type annotations, are spec
errors reported before any data is touched. The first line of the factory's docstring is shown by
``harness list KIND``. A ``version`` attribute on the factory (a string) enters the cache keys and the
result document: bump it whenever outputs change. (A part without one is keyed by its package's
version, so every release of the package invalidates its cached outputs.)

A parameter annotated with :func:`harness.params.PartParam` (or ``PartListParam``) is itself a part:
the spec gives a part mapping, the core validates it recursively, creates it through the registry and
passes the created object; its identity enters the holder's cache keys. Every created part carries a
``harness_spec`` attribute (its resolved ``{name, **params}`` mapping) where the object allows it.

Plugin modules must import quickly: import torch, faiss, timm or augly inside methods, never at module
level, so that ``harness --help`` and ``harness validate`` stay fast. The structural contracts of the
parts (what the created objects must offer) are in :mod:`harness.parts`; :mod:`harness.testing` checks
them.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("harness")

#: The type of the ``register`` callable each hook receives.
Register = Callable[[str, Callable[..., Any]], None]


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset factories.

    A dataset (:class:`harness.parts.Dataset`) reads a benchmark from its official on-disk layout (or
    builds it, for generated datasets) and offers its splits by role: ``"queries"``, ``"database"`` and,
    when the benchmark has one, ``"train"`` (for PCA, whitening, score normalization, index training).
    It also returns the ground truth in a typed form that the track's metrics understand, and a data
    fingerprint (``fingerprint()``) that keys what depends on the whole dataset (metrics). Stages that
    depend on one role only (describing the database) are keyed by that role's items: by default the
    core hashes (id, file size, bbox) of the role's items; a dataset may offer
    ``role_fingerprint(role) -> str`` instead (e.g. when its files are generated).
    """


@hookspec
def register_pipelines(register: Register) -> None:
    """Register pipelines: the shapes of tracks (retrieval, watermark robustness, composed retrieval).

    ``pipeline: NAME`` in a spec selects one (default ``retrieval``). The factory takes no parameters
    and returns a :class:`harness.parts.Pipeline`: ``fields`` (the spec keys it reads, as
    :class:`harness.parts.Field`: part kinds, lists, chains, plain options; the core validates them
    before anything runs, per grid cell), ``roles`` (the dataset roles it needs), ``metric_input`` (the
    type name of what its metrics take: a metric whose ``input_type`` differs is a spec error), and
    ``build(cell, ctx)``, which creates parts through ``ctx`` (:class:`harness.context.BuildContext`),
    adds keyed stages to the run's graph and returns ``{label: metric stage}``. The core expands the
    grid, calls ``build`` once per cell (stages with equal keys are shared), evaluates the metric
    stages and writes the result document; it never branches on a pipeline's name.
    """


@hookspec
def register_transforms(register: Register) -> None:
    """Register transformation generators (query generation, attacks).

    A transform (:class:`harness.parts.Transform`) is ``transform(image, rng) -> image`` on
    ``PIL.Image.Image`` in RGB mode. All randomness must come from ``rng`` (a
    ``numpy.random.Generator`` that the core derives from the spec seed, the item id and the transform
    name), so that a query set is reproducible item by item and bit for bit.
    """


@hookspec
def register_descriptors(register: Register) -> None:
    """Register image descriptor factories.

    A descriptor (:class:`harness.parts.Descriptor`) maps a list of images to a float32 array of shape
    ``(n, d)`` with ``describe(images)``. Torch-based descriptors may also offer
    :class:`harness.parts.BatchedDescriptor` (``preprocess`` per image in loader worker processes,
    ``forward`` per batch), which the core uses for batched, parallel extraction.
    """


@hookspec
def register_postprocessors(register: Register) -> None:
    """Register descriptor post-processing steps (PCA, whitening, L2 normalization, score normalization).

    A post-processor (:class:`harness.parts.Postprocessor`) is fitted on the training split only (never
    on the queries or database being scored) and then applied to each role's descriptors;
    ``apply(x, role)`` may treat queries and database differently (for example score normalization
    appends a different extra dimension to each).
    """


@hookspec
def register_indexes(register: Register) -> None:
    """Register index factories.

    An index (:class:`harness.parts.Index`) follows the faiss vocabulary: optional ``train`` on the
    training descriptors, ``add`` the database, then ``search`` the queries, returning
    :class:`harness.parts.Neighbors` (per-query kNN, a global top-K list of pairs, or range-search
    pairs; higher score = more similar).
    """


@hookspec
def register_watermarkers(register: Register) -> None:
    """Register watermarking methods.

    A watermarker (:class:`harness.parts.Watermarker`) has ``embed(image, key) -> image`` and
    ``detect(image, key) -> float`` (a raw score; multi-bit methods may return ``(score, bits)``).
    The key is an integer from which the method derives its secret (carrier, message).
    """



@hookspec
def register_composers(register: Register) -> None:
    """Register composers of composed-retrieval queries (SIMAT's arithmetic, a sum, a learned model).

    A composer turns (source image embedding, text embeddings) into query vectors:
    ``prepare_images(x)`` / ``prepare_texts(t)`` (e.g. linear heads, normalisation: what the
    database side depends on, named by ``database_params``, so a grid over the other parameters shares
    it) and ``compose(images, texts, queries) -> (nq, d)``; a linear composer also offers
    ``coefficients()`` (q = I[src] + sum_j c_j T[text_j]), which lets the pipeline score without
    forming the queries.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register metrics.

    A metric (:class:`harness.parts.Metric`) is a pure function ``metric(ground_truth, output)`` of the
    pipeline's output (``input_type`` on the factory names the type it takes; default
    ``"retrieval"``: :class:`harness.parts.Retrieval`) that returns a ``dict`` of named numbers (``None`` where a value is undefined, e.g. a recall at a
    precision that is never reached). It names the scoring protocol and version it implements in its
    ``protocol`` and ``version`` attributes; both go into the result document. ``display`` (value
    name or pattern -> ``"percent"`` | ``"number"`` | ``"integer"``) says how the terminal shows values;
    ``main_metric`` (a value name) is what leaderboards rank by and reports plot (default: the first
    number). A value may be a list (e.g. DISC21's ``pr_curve`` points, which reports plot); tables skip
    lists.
    """


@hookspec
def register_scorers(register: Register) -> None:
    """Register submission scorers for ``harness score TRACK SUBMISSION --ground-truth GT``.

    ``name`` is the TRACK argument. The factory's keyword parameters are the track's command-line
    options (``max_results`` is ``--max-results``; a ``Literal`` is a choice; a ``bool`` is a flag),
    parsed after TRACK and given only when the user typed them; an optional ``options_help`` mapping
    (parameter -> text) documents them in ``harness score TRACK --help``. An option the factory does not
    accept is reported as unsupported for that track. The created object
    (:class:`harness.parts.Scorer`) reads the untrusted submission and ground truth with the safe
    readers of :mod:`harness.submissions`, and returns a JSON-serialisable ``dict`` (nested dicts are
    groups: their values are named ``group.value``). Optional factory attributes: ``display`` (as for
    metrics), ``main_metric`` (the value ``harness board show`` ranks by, higher is better; default the
    first number) and ``board_values`` (the value names ``harness board show`` lists; default those
    shown as percentages).
    """
