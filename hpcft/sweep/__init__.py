"""Sweeps: `python -m hpcft -m ...` as Slurm job arrays.

`task` (what the launcher plugin is told), `launch` (points -> run directories -> arrays),
`arrays` (grouping and submitting), `record` (`sweep.json`), `results` (the points' table),
`multirun` (Hydra's multirun), `adaptive` and `controller` (an Optuna study's controller job).
Nothing is re-exported here, so importing one module does not import the others.
"""
