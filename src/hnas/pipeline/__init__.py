"""The application layer: one module per step a user runs, from a dataset to a deployed model.

Each `hnas` command is a few lines in :mod:`hnas.cli` over one module here:

=====================  ==========================================================================
``plan``               `hnas plan`: nnU-Net's plan of a dataset, a plans file or the built-in data
``grammar``            `hnas grammar`: the Lark grammar of a plan
``sample``             `hnas sample`: architecture strings from the prior or uniformly
``show``               `hnas show`: derivation tree, network table, cost and pictures of one string
``search``             `hnas search`: start or resume a search in a run folder
``status``             `hnas status`: the trials of a run
``retrain``            `hnas train` without --folds: one configuration, full budget
``cross_validate``     `hnas train --folds`: configurations x folds into RUN/cv/
``evaluate``           `hnas evaluate`: per-case metrics and paired tests of RUN/cv/ models
``find_best``          `hnas find-best`: best model or pair, its post-processing
``predict``            `hnas predict`: checkpoints, model folders or find-best's choice on new images
``report``             `hnas report`: read run folders for :mod:`hnas.viz.report`
``export``             `hnas export-nnunet`: a trial as a configuration of nnU-Net's plans
=====================  ==========================================================================

Shared by the steps: ``layout`` (every run-folder name; model.json and best_configuration.json),
``run`` (a run's settings and what they resolve to), ``spaces`` (the search vocabulary),
``workers`` (a machine's share per worker process), ``progress`` and ``text``.

Nothing below this package imports it (docs/architecture.md); importing it loads nothing: a
step's module is imported when its command runs.
"""
