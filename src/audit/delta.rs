//! The Delta table `audit.access_log` (being written).
