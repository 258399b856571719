"""Helpers the notebooks reuse: plots (:mod:`.viz`), the widget explorer (:mod:`.widgets`),
dataset exploration (:mod:`.exploration`, notebook 01) and error analysis
(:mod:`.error_analysis`, notebook 04)."""
