"""Model-ready data: vocabularies, splits, Petastorm datasets and the Torch data layer over them."""
