"""``plait tune``: search a config's ``tune.space`` with Optuna (``plait.tuning.study``).

``space`` holds the config section and its path rules; ``configs`` samples and validates
whole configs; ``study`` runs the trials; ``report`` draws the study as one HTML page.
"""
