"""What writes data roots: the procedural phantom (:mod:`.phantom`) and the converters of
public datasets (:mod:`.real`), both in the challenge layout."""
