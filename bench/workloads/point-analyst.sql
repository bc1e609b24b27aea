\set id random(1, :patients)
SELECT patient_id, mrn, birth_date, zip, sex, site_id FROM clinical.patients WHERE patient_id = :id;
