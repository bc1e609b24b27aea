//! Hash chain and signed checkpoints of the audit log (being written).
