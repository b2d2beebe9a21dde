"""Hyperparameter search for the fully connected VAE with keras-tuner: depth and learning rate.

The paper scaled its FC VAE from 1 to 15 hidden layers and tried "a large
range of learning rates" by hand; `search` (and `kvae tune`) does that with
keras-tuner. The objective is the validation negative ELBO, `val_loss`.

A search config is a kvae config (it may start from another one with `base`,
a plain config or another search config) plus a `[search]` table::

    base = "../configs/quickstart.toml"

    [search]
    tuner = "random"          # random, bayesian or hyperband
    max_trials = 20
    epochs = 5                # per trial (hyperband: the most epochs of one model)
    seed = 0                  # the same seed runs the same trials in any fresh folder
    hidden_layers = {min = 1, max = 15}
    learning_rate = {min = 1e-5, max = 1e-2, sampling = "log"}
    hidden_units = [256, 512, 1024]   # a list: choices
    latent_dim = 32                   # a number: fixed

`--config NAME` with a bare name is a built-in search preset
(kvae/presets/search/NAME.toml: "fc_depth_lr", the default, and "tiny"),
else a built-in experiment config.

A search folder holds::

    search_space.json         the space, tuner and base config (guards a resume)
    keras_tuner/              keras-tuner's project: oracle.json, trial_<id>/
    trials.csv                one row per trial (depth, learning rate, val_loss, time)
    trials.png                val_loss against depth and against learning rate
    best_hyperparameters.json the best trial
    best/                     a kvae run folder: the best hyperparameters retrained
                              from scratch (model.keras, config.json, samples/)

Running the same search again resumes it (keras-tuner's `overwrite=False`): a
trial cut short is run again, finished ones are kept, and a finished search
only rewrites its outputs. With `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`
and `KERASTUNER_ORACLE_PORT` set it runs as keras-tuner's distributed chief
(serves the oracle, then writes the outputs) or as a worker (runs trials);
`tuning/distributed.py` starts one chief and N workers on one machine.

The modules: `space` (the search space and settings), `hypermodel` (the
keras-tuner hypermodel), `searcher` (running a search and writing its
outputs), `report` (the trials table and plot) and `_keras_tuner` (every
use of keras-tuner internals, each marked with the version it was checked
on).
"""

from kvae.tuning._keras_tuner import KvaeBayesianOptimization, KvaeHyperband, KvaeRandomSearch
from kvae.tuning.hypermodel import FCVAEHyperModel, best_epoch_metrics
from kvae.tuning.report import TABLE_COLUMNS, format_table, plot_trials, trial_rows, write_table
from kvae.tuning.searcher import SearchResult, read_search_config, search
from kvae.tuning.space import (DEFAULT_SEARCH_CONFIG, DEFAULT_SETTINGS, DEFAULT_SPACE, OBJECTIVE, PARAMETERS,
                               SEARCH_SETTINGS, TUNERS, parse_space)

__all__ = [
    "DEFAULT_SEARCH_CONFIG", "DEFAULT_SETTINGS", "DEFAULT_SPACE", "FCVAEHyperModel", "KvaeBayesianOptimization",
    "KvaeHyperband", "KvaeRandomSearch", "OBJECTIVE", "PARAMETERS", "SEARCH_SETTINGS", "SearchResult",
    "TABLE_COLUMNS", "TUNERS", "best_epoch_metrics", "format_table", "parse_space", "plot_trials",
    "read_search_config", "search", "trial_rows", "write_table",
]
