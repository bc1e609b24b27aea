\set id random(1, :patients) * 100 + 1
SELECT encounter_id, patient_id, admit_ts, encounter_type, primary_dx FROM clinical.encounters WHERE encounter_id = :id;
