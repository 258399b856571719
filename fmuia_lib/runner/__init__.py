"""Running the notebook series: the run folder the notebooks share (:mod:`.run_folder`: data,
checkpoint hand-over, resuming) and the headless papermill suite (:mod:`.suite`)."""
