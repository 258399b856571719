"""The challenge side: model outputs -> prediction records (:mod:`.predict`) -> submission
files and their rules (:mod:`.submission`) -> scoring, numpy only (:mod:`.metrics`,
:mod:`.evaluate`) -> the Docker build context (:mod:`.export`)."""
