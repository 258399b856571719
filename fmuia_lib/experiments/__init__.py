"""Studies over seeds: the margins over image-blind baselines (:mod:`.margins`) and the
ablation of the switches (:mod:`.ablation`)."""
