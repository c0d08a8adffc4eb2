//! Pure aggregation of probe snapshots (no aya, no kernel).
