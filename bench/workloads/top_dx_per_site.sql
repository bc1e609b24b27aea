SELECT site_id, primary_dx, n FROM (
  SELECT site_id, primary_dx, count(*) AS n,
         row_number() OVER (PARTITION BY site_id ORDER BY count(*) DESC, primary_dx) AS rk
  FROM clinical.encounters
  GROUP BY site_id, primary_dx
) ranked
WHERE rk <= 5
ORDER BY site_id, rk;
