//! csv-export (being written)
