"""A phone-grade text tower distilled from MiniLM: static token vectors, one convolution, a pooled
map into MiniLM's sentence space (see student.py for the model, recipe.py for how it is fitted,
sentences.py for the text it learns from)."""
