"""Sources: one package per system we index. Nothing outside a source's package knows it."""
