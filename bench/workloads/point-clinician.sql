\set id random(1, :patients)
SELECT patient_id, mrn, last_name, ssn, birth_date, site_id FROM clinical.patients WHERE patient_id = :id;
