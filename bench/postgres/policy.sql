-- lakeward benchmark, PostgreSQL side: the demo policy of policy-rules/*.toml
-- expressed natively. Run by a superuser after schema.sql and the load:
--
--   psql -v pseudonym_key="$PSEUDONYM_KEY" -f bench/postgres/policy.sql
--
-- Rerunnable (every object is dropped or created-if-missing).
--
-- Design (README.md has the reasons and the measurements):
--   * clients query clinical.patients, clinical.encounters,
--     clinical.observations and claims.claims, as lakeward's clients do;
--   * each of those is a UNION ALL "dispatch" view over three per-role
--     views in schema lw (lw.<table>_clinician, _analyst, _researcher);
--   * a per-role view is a security_barrier view owned by the superuser: it
--     reads the raw tables with the owner's rights (the roles have no
--     privilege on schema raw or lw) and applies its role's row filter and
--     consent predicate in its WHERE clause and the masks in its SELECT list;
--   * each arm of a dispatch view is gated on current_user and the declared
--     purpose, a one-time filter: the arms of the other roles never run;
--   * the consent predicate is written as [NOT] EXISTS over the consent
--     index, so the planner picks a nested-loop probe for point lookups and
--     a hash (anti/semi) join for scans;
--   * the pseudonymisation key is stored in lw.pseudonym_key (readable by
--     the superuser only); patient pseudonyms are precomputed once per key
--     in lw.patient_pseudonyms and lw.mrn_pseudonyms (HMAC per row costs
--     ~1.6 us in pgcrypto);
--   * JIT is turned off for the three roles (see README.md).

\set ON_ERROR_STOP on
\if :{?pseudonym_key}
\else
  \echo 'policy.sql: pass the pseudonymisation key: psql -v pseudonym_key=<hex> -f policy.sql'
  \quit
\endif

SET client_min_messages = warning;
SET maintenance_work_mem = '1GB';

CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;

-- ---------------------------------------------------------------------------
-- Keys and indexes
-- ---------------------------------------------------------------------------

DO $$
DECLARE
    pk record;
BEGIN
    FOR pk IN SELECT * FROM (VALUES
        ('raw.patients',     'patients_pkey',     'patient_id'),
        ('raw.encounters',   'encounters_pkey',   'encounter_id'),
        ('raw.observations', 'observations_pkey', 'observation_id'),
        ('raw.claims',       'claims_pkey',       'claim_id')) AS v(tbl, name, col)
    LOOP
        IF NOT EXISTS (SELECT FROM pg_constraint
                       WHERE conrelid = pk.tbl::regclass AND contype = 'p') THEN
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY (%I)',
                           pk.tbl, pk.name, pk.col);
        END IF;
    END LOOP;
END
$$;

CREATE INDEX IF NOT EXISTS encounters_patient_id_idx   ON raw.encounters (patient_id);
CREATE INDEX IF NOT EXISTS encounters_site_id_idx      ON raw.encounters (site_id);
CREATE INDEX IF NOT EXISTS observations_patient_id_idx ON raw.observations (patient_id);
CREATE INDEX IF NOT EXISTS observations_encounter_id_idx ON raw.observations (encounter_id);
CREATE INDEX IF NOT EXISTS claims_patient_id_idx       ON raw.claims (patient_id);
-- The consent lookup: equality on (patient, purpose), latest record first.
CREATE INDEX IF NOT EXISTS consents_patient_purpose_recorded_idx
    ON raw.consents (patient_id, purpose, recorded_at DESC)
    INCLUDE (granted, expires_at);
-- The consent anti/semi joins of scans read one purpose's records: a
-- covering index by purpose turns that into an index-only range scan.
CREATE INDEX IF NOT EXISTS consents_purpose_patient_idx
    ON raw.consents (purpose, patient_id, recorded_at DESC)
    INCLUDE (granted, expires_at);

-- ---------------------------------------------------------------------------
-- Login roles (password "bench"). They get USAGE on the two client-facing
-- schemas and SELECT on the four dispatch views, nothing else.
-- ---------------------------------------------------------------------------

SET password_encryption = 'scram-sha-256';
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['clinician', 'analyst', 'researcher'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', r);
        END IF;
        EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD %L', r, 'bench');
        -- JIT off: the dispatch views make large plans whose never-run arms
        -- are compiled too (README.md: 6.5 s of JIT for a 0.7 s query).
        EXECUTE format('ALTER ROLE %I SET jit = off', r);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Schema lw: the key, the precomputed pseudonyms, the per-role views.
-- Nobody but the owner (the superuser) has any privilege on it.
-- ---------------------------------------------------------------------------

DROP SCHEMA IF EXISTS clinical CASCADE;
DROP SCHEMA IF EXISTS claims CASCADE;
DROP SCHEMA IF EXISTS lw CASCADE;
CREATE SCHEMA lw;
REVOKE ALL ON SCHEMA lw FROM PUBLIC;
REVOKE ALL ON SCHEMA raw FROM PUBLIC;

-- lakeward HMACs with the hex-decoded bytes of the key.
CREATE TABLE lw.pseudonym_key (key bytea NOT NULL);
INSERT INTO lw.pseudonym_key VALUES (decode(:'pseudonym_key', 'hex'));
REVOKE ALL ON lw.pseudonym_key FROM PUBLIC;

-- lakeward_pseudonym of an integer: the first 8 bytes of
-- HMAC-SHA-256(key, 'i:' || decimal text), big-endian, top bit cleared.
CREATE FUNCTION lw.pseudonym(v bigint, key bytea) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN ('x' || encode(substring(public.hmac(convert_to('i:' || v::text, 'UTF8'), key, 'sha256') FROM 1 FOR 8), 'hex'))::bit(64)::bigint
       & 9223372036854775807;

-- lakeward_pseudonym of a text: 'p_' || hex of the first 12 bytes of
-- HMAC-SHA-256(key, 's:' || UTF-8 bytes).
CREATE FUNCTION lw.pseudonym(v text, key bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN 'p_' || encode(substring(public.hmac(convert_to('s:' || v, 'UTF8'), key, 'sha256') FROM 1 FOR 12), 'hex');

-- lakeward_zip3: first three characters + '00' when they are ASCII digits.
CREATE FUNCTION lw.zip3(zip text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN zip ~ '^[0-9]{3}' THEN left(zip, 3) || '00' END;

-- lakeward_partial(ssn, 4, '***-**-'): at most 4 trailing characters, never
-- more than half of the value.
CREATE FUNCTION lw.ssn_last4(ssn text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN '***-**-' || right(ssn, least(4, length(ssn) / 2));

-- Patient pseudonyms, computed once per key for every patient id of every
-- table (so that the LEFT JOINs below never miss and can be removed by the
-- planner when the column is not used). Also the MRN pseudonym (one MRN per
-- patient). Indexed on the pseudonym: a researcher's
-- "WHERE patient_id = <pseudonym>" becomes an index lookup.
CREATE TABLE lw.patient_pseudonyms AS
SELECT ids.patient_id,
       lw.pseudonym(ids.patient_id, k.key) AS pseudonym
FROM (SELECT patient_id FROM raw.patients
      UNION SELECT patient_id FROM raw.encounters
      UNION SELECT patient_id FROM raw.observations
      UNION SELECT patient_id FROM raw.claims) AS ids,
     lw.pseudonym_key AS k;
ALTER TABLE lw.patient_pseudonyms ADD PRIMARY KEY (patient_id);
CREATE INDEX ON lw.patient_pseudonyms (pseudonym);

CREATE TABLE lw.mrn_pseudonyms AS
SELECT p.patient_id, lw.pseudonym(p.mrn, k.key) AS mrn
FROM raw.patients p, lw.pseudonym_key k;
ALTER TABLE lw.mrn_pseudonyms ADD PRIMARY KEY (patient_id);

-- ---------------------------------------------------------------------------
-- Session attributes, as lakeward gets them: startup options
--   options='-c lakeward.purpose=operations -c lakeward.site=S01'
-- read with current_setting(…, true) (NULL when unset). The role is
-- current_user. A purpose the role may not declare admits no row.
-- ---------------------------------------------------------------------------

-- Consent (consent.toml): among a patient's records for the purpose that
-- have not expired (expires_at NULL or after now, UTC as lakeward compares
-- them), the latest by recorded_at decides; on a tie a refusal wins
-- (lakeward orders by recorded_at DESC, granted ASC).
--   opt-out: hidden iff the decisive record has granted = false, i.e. there
--            is an unexpired refusal with no later unexpired record;
--   opt-in:  shown iff the decisive record has granted = true, i.e. there is
--            an unexpired grant with no later (or equally late refusing)
--            unexpired record.
-- Written as [NOT] EXISTS so that it becomes a join the planner can run as
-- a nested-loop probe of consents_patient_purpose_recorded_idx (point
-- lookups) or as a hash join (scans). Fragments below; the protected table
-- is aliased t. now() and current_setting() are deliberately NOT wrapped in
-- scalar subqueries: in PostgreSQL 15 an InitPlan inside a per-role view
-- makes the view's scan parallel-unsafe, which costs more than evaluating
-- them per row (and as index conditions they are evaluated once per scan).
\set now_utc '(now() AT TIME ZONE ''UTC'')'
\set unexpired_c  '(c.expires_at IS NULL OR c.expires_at > ' :now_utc ')'
\set unexpired_c2 '(c2.expires_at IS NULL OR c2.expires_at > ' :now_utc ')'
\set opt_out_head 'NOT EXISTS (SELECT 1 FROM raw.consents c WHERE c.patient_id = t.patient_id AND NOT c.granted AND ' :unexpired_c ' AND NOT EXISTS (SELECT 1 FROM raw.consents c2 WHERE c2.patient_id = c.patient_id AND c2.purpose = c.purpose AND ' :unexpired_c2 ' AND c2.recorded_at > c.recorded_at) AND c.purpose = '
\set opt_in_research 'EXISTS (SELECT 1 FROM raw.consents c WHERE c.patient_id = t.patient_id AND c.purpose = ''research'' AND c.granted AND ' :unexpired_c ' AND NOT EXISTS (SELECT 1 FROM raw.consents c2 WHERE c2.patient_id = c.patient_id AND c2.purpose = c.purpose AND ' :unexpired_c2 ' AND c2.recorded_at >= c.recorded_at AND (c2.recorded_at > c.recorded_at OR NOT c2.granted)))'
-- clinician: purpose treatment, opt-out
\set consent_clinician :opt_out_head '''treatment'')'
-- analyst: purpose payment or operations (checked by the gate), opt-out
\set consent_analyst :opt_out_head 'current_setting(''lakeward.purpose'', true))'

\set gate_clinician  '(current_user = ''clinician'' AND current_setting(''lakeward.purpose'', true) = ''treatment'')'
\set gate_analyst    '(current_user = ''analyst'' AND current_setting(''lakeward.purpose'', true) IN (''payment'', ''operations''))'
\set gate_researcher '(current_user = ''researcher'' AND current_setting(''lakeward.purpose'', true) = ''research'')'
\set own_site        'current_setting(''lakeward.site'', true)'
-- Safe Harbor: NULL when the age in completed years today (UTC) is over 89,
-- i.e. unless the birth date is after today minus 90 years (PostgreSQL's
-- date arithmetic clamps 29 February exactly as the completed-years rule
-- needs). Not a scalar subquery, for the same reason as above.
\set born_after '((now() AT TIME ZONE ''UTC'')::date - interval ''90 years'')::date'

-- ---------------------------------------------------------------------------
-- clinical.patients
-- ---------------------------------------------------------------------------

-- clinician: own site; ssn partial; everything else visible.
CREATE VIEW lw.patients_clinician WITH (security_barrier) AS
SELECT t.patient_id, t.mrn, t.first_name, t.last_name,
       lw.ssn_last4(t.ssn) AS ssn,
       t.birth_date, t.sex, t.zip, t.phone, t.email, t.site_id, t.deceased
FROM raw.patients t
WHERE t.site_id = :own_site
  AND :consent_clinician;

-- analyst: all sites; phi.direct NULL; mrn pseudonym; birth_date year; zip3.
CREATE VIEW lw.patients_analyst WITH (security_barrier) AS
SELECT t.patient_id, m.mrn,
       NULL::text AS first_name, NULL::text AS last_name, NULL::text AS ssn,
       date_trunc('year', t.birth_date::timestamp)::date AS birth_date,
       t.sex, lw.zip3(t.zip) AS zip,
       NULL::text AS phone, NULL::text AS email, t.site_id, t.deceased
FROM raw.patients t
LEFT JOIN lw.mrn_pseudonyms m ON m.patient_id = t.patient_id
WHERE :consent_analyst;

-- researcher: opted-in only; patient_id pseudonym; phi.direct (mrn too) NULL;
-- birth_date year or NULL over 89; zip3.
CREATE VIEW lw.patients_researcher WITH (security_barrier) AS
SELECT ps.pseudonym AS patient_id, NULL::text AS mrn,
       NULL::text AS first_name, NULL::text AS last_name, NULL::text AS ssn,
       CASE WHEN t.birth_date > :born_after
            THEN date_trunc('year', t.birth_date::timestamp)::date END AS birth_date,
       t.sex, lw.zip3(t.zip) AS zip,
       NULL::text AS phone, NULL::text AS email, t.site_id, t.deceased
FROM raw.patients t
LEFT JOIN lw.patient_pseudonyms ps ON ps.patient_id = t.patient_id
WHERE :opt_in_research;

-- ---------------------------------------------------------------------------
-- clinical.encounters
-- ---------------------------------------------------------------------------

CREATE VIEW lw.encounters_clinician WITH (security_barrier) AS
SELECT t.encounter_id, t.patient_id, t.site_id, t.admit_ts, t.discharge_ts,
       t.encounter_type, t.primary_dx, t.attending_npi
FROM raw.encounters t
WHERE t.site_id = :own_site
  AND :consent_clinician;

CREATE VIEW lw.encounters_analyst WITH (security_barrier) AS
SELECT t.encounter_id, t.patient_id, t.site_id, t.admit_ts, t.discharge_ts,
       t.encounter_type, t.primary_dx, t.attending_npi
FROM raw.encounters t
WHERE :consent_analyst;

CREATE VIEW lw.encounters_researcher WITH (security_barrier) AS
SELECT t.encounter_id, ps.pseudonym AS patient_id, t.site_id,
       date_trunc('year', t.admit_ts) AS admit_ts,
       date_trunc('year', t.discharge_ts) AS discharge_ts,
       t.encounter_type, t.primary_dx, t.attending_npi
FROM raw.encounters t
LEFT JOIN lw.patient_pseudonyms ps ON ps.patient_id = t.patient_id
WHERE :opt_in_research;

-- ---------------------------------------------------------------------------
-- clinical.observations (no site column: the clinician's site filter goes
-- through the encounter, over the raw encounters as in lakeward)
-- ---------------------------------------------------------------------------

CREATE VIEW lw.observations_clinician WITH (security_barrier) AS
SELECT t.observation_id, t.patient_id, t.encounter_id, t.loinc_code,
       t.value_num, t.unit, t.observed_at
FROM raw.observations t
WHERE t.encounter_id IN (SELECT e.encounter_id FROM raw.encounters e
                         WHERE e.site_id = :own_site)
  AND :consent_clinician;

CREATE VIEW lw.observations_analyst WITH (security_barrier) AS
SELECT t.observation_id, t.patient_id, t.encounter_id, t.loinc_code,
       t.value_num, t.unit, t.observed_at
FROM raw.observations t
WHERE :consent_analyst;

CREATE VIEW lw.observations_researcher WITH (security_barrier) AS
SELECT t.observation_id, ps.pseudonym AS patient_id, t.encounter_id,
       t.loinc_code, t.value_num, t.unit,
       date_trunc('year', t.observed_at) AS observed_at
FROM raw.observations t
LEFT JOIN lw.patient_pseudonyms ps ON ps.patient_id = t.patient_id
WHERE :opt_in_research;

-- ---------------------------------------------------------------------------
-- claims.claims
-- ---------------------------------------------------------------------------

CREATE VIEW lw.claims_clinician WITH (security_barrier) AS
SELECT t.claim_id, t.patient_id, t.site_id, t.payer, t.service_date,
       t.cpt_code, t.icd10_code, t.billed_amount, t.allowed_amount,
       t.status, t.denial_reason
FROM raw.claims t
WHERE t.site_id = :own_site
  AND :consent_clinician;

CREATE VIEW lw.claims_analyst WITH (security_barrier) AS
SELECT t.claim_id, t.patient_id, t.site_id, t.payer, t.service_date,
       t.cpt_code, t.icd10_code, t.billed_amount, t.allowed_amount,
       t.status, t.denial_reason
FROM raw.claims t
WHERE :consent_analyst;

CREATE VIEW lw.claims_researcher WITH (security_barrier) AS
SELECT t.claim_id, ps.pseudonym AS patient_id, t.site_id, t.payer,
       date_trunc('year', t.service_date::timestamp)::date AS service_date,
       t.cpt_code, t.icd10_code, t.billed_amount, t.allowed_amount,
       t.status, t.denial_reason
FROM raw.claims t
LEFT JOIN lw.patient_pseudonyms ps ON ps.patient_id = t.patient_id
WHERE :opt_in_research;

-- ---------------------------------------------------------------------------
-- The client-facing names: one dispatch view per table. Not a barrier
-- itself (a UNION ALL view is flattened into an append relation, which
-- would drop the barrier anyway); each arm is a barrier view, so only
-- leakproof conditions of the client's query are evaluated before the
-- policy's, and the client's conditions see masked values.
-- ---------------------------------------------------------------------------

CREATE SCHEMA clinical;
CREATE SCHEMA claims;

CREATE VIEW clinical.patients AS
          SELECT * FROM lw.patients_clinician  WHERE :gate_clinician
UNION ALL SELECT * FROM lw.patients_analyst    WHERE :gate_analyst
UNION ALL SELECT * FROM lw.patients_researcher WHERE :gate_researcher;

CREATE VIEW clinical.encounters AS
          SELECT * FROM lw.encounters_clinician  WHERE :gate_clinician
UNION ALL SELECT * FROM lw.encounters_analyst    WHERE :gate_analyst
UNION ALL SELECT * FROM lw.encounters_researcher WHERE :gate_researcher;

CREATE VIEW clinical.observations AS
          SELECT * FROM lw.observations_clinician  WHERE :gate_clinician
UNION ALL SELECT * FROM lw.observations_analyst    WHERE :gate_analyst
UNION ALL SELECT * FROM lw.observations_researcher WHERE :gate_researcher;

CREATE VIEW claims.claims AS
          SELECT * FROM lw.claims_clinician  WHERE :gate_clinician
UNION ALL SELECT * FROM lw.claims_analyst    WHERE :gate_analyst
UNION ALL SELECT * FROM lw.claims_researcher WHERE :gate_researcher;

GRANT USAGE ON SCHEMA clinical, claims TO clinician, analyst, researcher;
GRANT SELECT ON clinical.patients, clinical.encounters, clinical.observations,
                claims.claims
    TO clinician, analyst, researcher;

ANALYZE;
