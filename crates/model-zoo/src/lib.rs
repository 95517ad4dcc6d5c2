//! model-zoo
