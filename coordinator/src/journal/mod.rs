//! The operation journal (filled in).
