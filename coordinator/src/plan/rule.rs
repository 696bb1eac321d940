//! Defrag rules (filled in by the rule parser).
