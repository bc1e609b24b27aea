-- lakeward benchmark, PostgreSQL side: the raw tables.
--
-- Same rows as the Delta tables lakeward serves (loaded by load.sh from
-- `lakeward-baseline dump`), columns in exactly the order and types of
-- src/datagen/schema.rs so that CSV loads positionally:
--   Int64 = BIGINT, Utf8 = TEXT, Date32 = DATE,
--   Timestamp(us, no time zone) = TIMESTAMP, Decimal128(12,2) = NUMERIC(12,2),
--   Float64 = DOUBLE PRECISION, Boolean = BOOLEAN.
-- Keys and indexes are created by policy.sql after the load (faster bulk load).
--
-- Rerunnable: drops and recreates schema raw (and everything depending on it).

\set ON_ERROR_STOP on
SET client_min_messages = warning;

DROP SCHEMA IF EXISTS raw CASCADE;
CREATE SCHEMA raw;

CREATE TABLE raw.patients (
    patient_id  BIGINT  NOT NULL,
    mrn         TEXT    NOT NULL,
    first_name  TEXT    NOT NULL,
    last_name   TEXT    NOT NULL,
    ssn         TEXT,
    birth_date  DATE    NOT NULL,
    sex         TEXT    NOT NULL,
    zip         TEXT    NOT NULL,
    phone       TEXT,
    email       TEXT,
    site_id     TEXT    NOT NULL,
    deceased    BOOLEAN NOT NULL
);

CREATE TABLE raw.encounters (
    encounter_id   BIGINT    NOT NULL,
    patient_id     BIGINT    NOT NULL,
    site_id        TEXT      NOT NULL,
    admit_ts       TIMESTAMP NOT NULL,
    discharge_ts   TIMESTAMP,
    encounter_type TEXT      NOT NULL,
    primary_dx     TEXT      NOT NULL,
    attending_npi  TEXT      NOT NULL
);

CREATE TABLE raw.observations (
    observation_id BIGINT           NOT NULL,
    patient_id     BIGINT           NOT NULL,
    encounter_id   BIGINT           NOT NULL,
    loinc_code     TEXT             NOT NULL,
    value_num      DOUBLE PRECISION NOT NULL,
    unit           TEXT             NOT NULL,
    observed_at    TIMESTAMP        NOT NULL
);

CREATE TABLE raw.claims (
    claim_id       BIGINT        NOT NULL,
    patient_id     BIGINT        NOT NULL,
    site_id        TEXT          NOT NULL,
    payer          TEXT          NOT NULL,
    service_date   DATE          NOT NULL,
    cpt_code       TEXT          NOT NULL,
    icd10_code     TEXT          NOT NULL,
    billed_amount  NUMERIC(12,2) NOT NULL,
    allowed_amount NUMERIC(12,2),
    status         TEXT          NOT NULL,
    denial_reason  TEXT
);

CREATE TABLE raw.consents (
    patient_id  BIGINT    NOT NULL,
    purpose     TEXT      NOT NULL,
    granted     BOOLEAN   NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    expires_at  TIMESTAMP
);
