SELECT date_trunc('day', admit_ts) AS day, site_id, primary_dx, count(*) AS encounters,
       min(encounter_type) AS first_type
FROM clinical.encounters
GROUP BY 1, 2, 3
ORDER BY encounters DESC
LIMIT 20;
