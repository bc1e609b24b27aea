//! lakeward's integration tests: one binary, real servers on loopback ports,
//! real clients (tokio-postgres, psql).

mod support;

mod aggregation;
mod audit;
mod bad_input;
mod caches;
mod cancel;
mod clients;
mod cluster;
mod conformance;
mod copy;
mod corpus;
mod datagen;
mod enforcement;
mod fhir_export;
mod fingerprints;
mod identity;
mod introspection;
mod linkage;
mod lookups;
mod memory;
mod object_store;
mod operations;
mod patient_access;
mod pg_behaviour;
mod policy_change;
mod policy_cli;
mod psql;
mod reload;
mod session_rules;
mod superset;
mod tools;
mod unusual_access;
mod verifier;
mod wire;
