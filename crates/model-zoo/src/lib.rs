//! model-zoo (being written)
