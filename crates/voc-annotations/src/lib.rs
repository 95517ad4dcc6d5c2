//! voc-annotations (being written)
