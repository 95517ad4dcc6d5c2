//! augment (being written)
