SELECT e.encounter_type, count(DISTINCT o.patient_id) AS patients, count(*) AS results,
       avg(o.value_num) AS mean_hba1c
FROM clinical.observations o
JOIN clinical.encounters e ON e.encounter_id = o.encounter_id
WHERE o.loinc_code = '4548-4' AND o.value_num >= 6.5
GROUP BY e.encounter_type
ORDER BY e.encounter_type;
