//! viz (being written)
