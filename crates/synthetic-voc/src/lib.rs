//! synthetic-voc (being written)
