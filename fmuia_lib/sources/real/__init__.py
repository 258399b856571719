"""Public ultrasound datasets converted into the challenge layout (``fmuia data real``).

One module per dataset reads its original layout (:mod:`.busi`, :mod:`.hc18`,
:mod:`.ccaui`, :mod:`.ddti`, :mod:`.pocus`); :mod:`.common` holds what they share
(reading images and masks, filling outline annotations, boxes from masks);
:mod:`.convert` splits, writes and reports. See ``docs/real_data.md`` for the class
mappings, split rules, citations and licences.
"""
from fmuia_lib.sources.real.common import RealDataError
from fmuia_lib.sources.real.convert import DATASETS, citations, convert_real, real_main

__all__ = ["DATASETS", "RealDataError", "citations", "convert_real", "real_main"]
