-- One patient's chart as a clinician's dashboard reads it: the patient,
-- their encounters, observations and claims (four statements, one
-- transaction per chart in pgbench's latency).
\set id random(1, :patients)
SELECT patient_id, mrn, last_name, birth_date, site_id FROM clinical.patients WHERE patient_id = :id;
SELECT encounter_id, admit_ts, encounter_type, primary_dx FROM clinical.encounters WHERE patient_id = :id;
SELECT observation_id, loinc_code, value_num, unit, observed_at FROM clinical.observations WHERE patient_id = :id;
SELECT claim_id, service_date, cpt_code, billed_amount, status FROM claims.claims WHERE patient_id = :id;
