//! largest-object (being written)
