"""Speech synthesis backends and the voice chosen per language."""
