//! Query fingerprints (being written).
