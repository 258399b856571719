"""Running the notebook series: the run folder the notebooks share (:mod:`.run_folder`: data,
checkpoint hand-over, resuming), the headless papermill suite (:mod:`.suite`) and
``fmuia train`` (:mod:`.train_command`: a profile and overrides to a training run)."""
