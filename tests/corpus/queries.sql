-- lakeward adversarial query corpus (tests/it/corpus.rs runs it as every role).
--
-- Format: ONE QUERY PER LINE. Blank lines and lines starting with `--` are
-- ignored; a query never spans lines and carries no trailing `;`.
-- Every query reads at least one clinical/claims table and outputs at least
-- one identifying column (site_id, patient_id, mrn, first_name, last_name,
-- ssn, phone, email, birth_date, zip), possibly renamed or transformed, or an
-- aggregate. A column named exactly `n_patients` must equal the number of
-- patients the role may see (the runner checks it against the raw data).
-- Keep every query cheap on 2,000 patients: no unbounded cross joins.

-- ---- plain reads, names, quoting, case --------------------------------------
SELECT * FROM clinical.patients
SELECT p.* FROM clinical.patients p
SELECT patient_id, mrn, first_name, last_name, ssn, phone, email, birth_date, zip, site_id FROM clinical.patients
SELECT patient_id, mrn, first_name, last_name, ssn, phone, email, birth_date, zip, site_id FROM "clinical"."patients"
SELECT PATIENT_ID, MRN, FIRST_NAME, LAST_NAME, SSN, PHONE, EMAIL, BIRTH_DATE, ZIP, SITE_ID FROM CLINICAL.PATIENTS
SELECT "patient_id", "ssn", "last_name" FROM "clinical"."patients"
SELECT * FROM datafusion.clinical.patients
SELECT patient_id, ssn, mrn, site_id FROM "datafusion"."clinical"."patients"
SELECT x.ssn, x.first_name, x.last_name, x.site_id FROM datafusion.clinical.patients AS x
SELECT Clinical.Patients.ssn, Clinical.Patients.email, Clinical.Patients.site_id FROM Clinical.Patients
SELECT clinical.patients.* FROM clinical.patients
SELECT t.* FROM CLINICAL.patients AS t WHERE t.patient_id < 500
SELECT ssn AS s, first_name AS f, last_name AS l, phone AS ph, email AS em, birth_date AS bd, zip AS z, mrn AS m, patient_id AS pid, site_id AS sid FROM clinical.patients
SELECT ssn AS "SSN Value", last_name AS "Name" FROM clinical.patients
SELECT * FROM clinical.encounters
SELECT * FROM clinical.observations LIMIT 3000
SELECT * FROM claims.claims
SELECT e.* FROM "clinical"."encounters" e
SELECT C.* FROM CLAIMS.CLAIMS C
SELECT * FROM datafusion.claims.claims WHERE status = 'denied'
SELECT patient_id, site_id, admit_ts FROM datafusion.clinical.encounters

-- ---- WHERE, ORDER BY, LIMIT, OFFSET, DISTINCT -------------------------------
SELECT patient_id, ssn, last_name FROM clinical.patients WHERE site_id = 'S02'
SELECT patient_id, ssn, last_name, site_id FROM clinical.patients WHERE site_id <> 'S01'
SELECT patient_id, ssn, site_id FROM clinical.patients WHERE site_id IN ('S01', 'S02', 'S03')
SELECT patient_id, ssn, site_id FROM clinical.patients WHERE site_id = 'S05' OR 1 = 1
SELECT patient_id, ssn, site_id FROM clinical.patients WHERE NOT (site_id = 'S01')
SELECT patient_id, ssn, last_name FROM clinical.patients WHERE ssn IS NOT NULL ORDER BY ssn LIMIT 50
SELECT patient_id, ssn FROM clinical.patients WHERE ssn LIKE '%-%' ORDER BY patient_id DESC LIMIT 100 OFFSET 10
SELECT last_name, first_name, site_id FROM clinical.patients ORDER BY last_name DESC, first_name LIMIT 200
SELECT mrn, site_id FROM clinical.patients ORDER BY mrn LIMIT 20 OFFSET 100
SELECT DISTINCT last_name FROM clinical.patients
SELECT DISTINCT first_name, site_id FROM clinical.patients
SELECT DISTINCT zip FROM clinical.patients
SELECT DISTINCT birth_date FROM clinical.patients ORDER BY birth_date
SELECT DISTINCT site_id FROM clinical.patients
SELECT DISTINCT site_id FROM claims.claims
SELECT DISTINCT patient_id, site_id FROM clinical.encounters
SELECT patient_id, birth_date FROM clinical.patients WHERE birth_date > DATE '1990-06-15'
SELECT patient_id, birth_date FROM clinical.patients WHERE birth_date BETWEEN DATE '1950-01-01' AND DATE '1960-12-31' ORDER BY birth_date
SELECT patient_id, zip FROM clinical.patients WHERE zip LIKE '0%' OR zip LIKE '9%'
SELECT patient_id, phone, email FROM clinical.patients WHERE phone IS NOT NULL OR email IS NOT NULL
SELECT patient_id, last_name FROM clinical.patients WHERE last_name IN ('Smith', 'Johnson', 'Williams', 'Brown', 'Garcia')
SELECT patient_id, mrn FROM clinical.patients WHERE mrn >= 'MRN00000500' ORDER BY mrn
SELECT patient_id, site_id FROM clinical.patients ORDER BY 1 LIMIT 10 OFFSET 5
SELECT patient_id, site_id FROM clinical.patients ORDER BY random() LIMIT 25

-- ---- string functions over every text column ---------------------------------
SELECT upper(first_name) AS f, upper(last_name) AS l, upper(email) AS e, upper(mrn) AS m FROM clinical.patients
SELECT lower(first_name) AS f, lower(last_name) AS l, lower(email) AS e, lower(mrn) AS m, lower(site_id) AS s FROM clinical.patients
SELECT substr(ssn, 1, 3) AS a, substr(ssn, 5, 2) AS b, substr(ssn, 8) AS c, patient_id FROM clinical.patients
SELECT substr(ssn, 1, 11) AS whole_ssn, substr(phone, 1, 12) AS whole_phone, substr(email, 1) AS whole_email FROM clinical.patients
SELECT substring(last_name FROM 1 FOR 20) AS l, substring(mrn FROM 4) AS m FROM clinical.patients
SELECT concat(first_name, ' ', last_name) AS full_name, site_id FROM clinical.patients
SELECT concat(ssn, '|', phone, '|', email, '|', zip) AS blob FROM clinical.patients
SELECT concat_ws(',', mrn, first_name, last_name, ssn, birth_date, zip, phone, email) AS row_text FROM clinical.patients
SELECT first_name || ' ' || last_name AS nm, ssn || '' AS s FROM clinical.patients
SELECT mrn || ':' || zip || ':' || site_id AS k FROM clinical.patients
SELECT 'x' || ssn || 'x' AS wrapped_ssn, 'y' || CAST(birth_date AS VARCHAR) AS wrapped_bd FROM clinical.patients
SELECT length(ssn) AS ls, length(first_name) AS lf, length(last_name) AS ll, length(phone) AS lp, length(email) AS le, length(mrn) AS lm, length(zip) AS lz, patient_id FROM clinical.patients
SELECT char_length(last_name) AS n, last_name FROM clinical.patients
SELECT replace(ssn, '-', '') AS digits, replace(phone, '-', '') AS ph_digits, patient_id FROM clinical.patients
SELECT replace(email, '@', ' at ') AS e, replace(mrn, 'MRN', '') AS m FROM clinical.patients
SELECT replace(zip, '0', 'O') AS z, replace(last_name, 'a', 'a') AS l FROM clinical.patients
SELECT split_part(ssn, '-', 1) AS p1, split_part(ssn, '-', 2) AS p2, split_part(ssn, '-', 3) AS p3, patient_id FROM clinical.patients
SELECT split_part(email, '@', 1) AS local_part, split_part(email, '@', 2) AS domain FROM clinical.patients
SELECT split_part(phone, '-', 1) AS area, split_part(CAST(birth_date AS VARCHAR), '-', 2) AS month, split_part(CAST(birth_date AS VARCHAR), '-', 3) AS day, patient_id FROM clinical.patients
SELECT reverse(ssn) AS r1, reverse(last_name) AS r2, reverse(mrn) AS r3 FROM clinical.patients
SELECT left(ssn, 6) AS l6, right(ssn, 4) AS r4, left(zip, 5) AS z5, right(email, 30) AS e30 FROM clinical.patients
SELECT lpad(zip, 8, '*') AS z, rpad(last_name, 20, '.') AS l, trim(first_name) AS f FROM clinical.patients
SELECT btrim(' ' || ssn || ' ') AS s, ltrim(phone) AS p, rtrim(email) AS e FROM clinical.patients
SELECT initcap(lower(last_name)) AS l, initcap(email) AS e FROM clinical.patients
SELECT strpos(ssn, '-') AS pos, ssn, patient_id FROM clinical.patients
SELECT regexp_replace(ssn, '[0-9]', '#') AS shape, regexp_replace(ssn, '^\*+', '') AS tail, patient_id FROM clinical.patients
SELECT translate(ssn, '0123456789', 'abcdefghij') AS coded FROM clinical.patients
SELECT repeat(last_name, 2) AS ll, repeat(zip, 1) AS z FROM clinical.patients
SELECT to_hex(patient_id) AS hex_id, patient_id FROM clinical.patients
SELECT ascii(ssn) AS a, chr(ascii(last_name)) AS c, patient_id FROM clinical.patients
SELECT starts_with(ssn, '***') AS masked, ssn FROM clinical.patients
SELECT upper(encounter_type) || '/' || site_id AS tag, patient_id FROM clinical.encounters
SELECT lower(payer) || ':' || site_id AS tag, patient_id FROM claims.claims

-- ---- CASE, COALESCE, NULLIF, casts -------------------------------------------
SELECT CASE WHEN ssn IS NULL THEN 'none' ELSE ssn END AS s, patient_id FROM clinical.patients
SELECT CASE WHEN site_id = 'S01' THEN last_name ELSE 'other:' || last_name END AS who FROM clinical.patients
SELECT CASE site_id WHEN 'S02' THEN ssn WHEN 'S03' THEN phone ELSE email END AS v, site_id FROM clinical.patients
SELECT CASE WHEN length(last_name) > 5 THEN upper(last_name) ELSE lower(first_name) END AS nm FROM clinical.patients
SELECT COALESCE(ssn, phone, email, first_name, last_name, mrn) AS first_non_null, patient_id FROM clinical.patients
SELECT COALESCE(first_name, 'anon') AS f, COALESCE(last_name, mrn) AS l, COALESCE(email, phone, 'none') AS contact FROM clinical.patients
SELECT COALESCE(ssn, '000-00-0000') AS ssn, COALESCE(CAST(birth_date AS VARCHAR), 'unknown') AS birth_date FROM clinical.patients
SELECT NULLIF(ssn, '') AS ssn, NULLIF(zip, '00000') AS zip, NULLIF(last_name, 'x') AS last_name FROM clinical.patients
SELECT CAST(patient_id AS VARCHAR) AS pid, CAST(birth_date AS VARCHAR) AS bd, CAST(zip AS INT) AS zi FROM clinical.patients
SELECT CAST(birth_date AS TIMESTAMP) AS bts, CAST(zip AS BIGINT) + 0 AS zn, patient_id FROM clinical.patients
SELECT birth_date::text AS bd, zip::int AS z, patient_id::text AS pid FROM clinical.patients
SELECT CAST(ssn AS VARCHAR(20)) AS s, CAST(mrn AS TEXT) AS m, CAST(phone AS CHAR(12)) AS p FROM clinical.patients
SELECT to_char(birth_date, 'YYYY-MM-DD') AS bd, patient_id FROM clinical.patients
SELECT date_part('month', birth_date) AS m, date_part('day', birth_date) AS d, EXTRACT(YEAR FROM birth_date) AS y, patient_id FROM clinical.patients
SELECT date_trunc('month', birth_date) AS bm, birth_date + INTERVAL '1 day' AS bd_plus, patient_id FROM clinical.patients
SELECT birth_date - INTERVAL '1 day' AS before_birth, patient_id FROM clinical.patients
SELECT CAST(birth_date AS VARCHAR) || ' ' || zip AS bdz FROM clinical.patients
SELECT CASE WHEN birth_date IS NULL THEN DATE '1900-01-01' ELSE birth_date END AS birth_date, patient_id FROM clinical.patients
SELECT make_date(EXTRACT(YEAR FROM birth_date), EXTRACT(MONTH FROM birth_date), EXTRACT(DAY FROM birth_date)) AS rebuilt_bd, patient_id FROM clinical.patients

-- ---- joins -------------------------------------------------------------------
SELECT p.patient_id, p.ssn, e.site_id, e.admit_ts FROM clinical.patients p JOIN clinical.encounters e ON e.patient_id = p.patient_id
SELECT p.patient_id, p.last_name, e.site_id FROM clinical.patients p INNER JOIN clinical.encounters e ON e.patient_id = p.patient_id AND e.site_id <> p.site_id
SELECT p.patient_id, p.mrn, e.encounter_id, e.site_id FROM clinical.patients p LEFT JOIN clinical.encounters e ON e.patient_id = p.patient_id
SELECT p.patient_id, p.mrn, e.encounter_id, e.site_id FROM clinical.patients p LEFT OUTER JOIN clinical.encounters e ON e.patient_id = p.patient_id AND e.site_id = 'S02'
SELECT e.patient_id, p.ssn, e.site_id FROM clinical.patients p RIGHT JOIN clinical.encounters e ON e.patient_id = p.patient_id
SELECT c.patient_id, p.last_name, c.site_id FROM clinical.patients p RIGHT OUTER JOIN claims.claims c ON c.patient_id = p.patient_id
SELECT p.patient_id, p.email, e.patient_id AS e_patient_id, e.site_id FROM clinical.patients p FULL JOIN clinical.encounters e ON e.patient_id = p.patient_id
SELECT p.patient_id, p.site_id, c.site_id AS claim_site_id FROM clinical.patients p FULL OUTER JOIN claims.claims c ON c.patient_id = p.patient_id
SELECT p.patient_id, p.ssn, s.site_id FROM clinical.patients p CROSS JOIN (SELECT DISTINCT site_id FROM clinical.encounters) s WHERE p.patient_id < 200
SELECT p.patient_id, p.last_name, v.label FROM clinical.patients p CROSS JOIN (VALUES ('a'), ('b')) AS v(label)
SELECT a.patient_id, a.last_name, b.first_name FROM clinical.patients a, clinical.patients b WHERE a.patient_id = b.patient_id
SELECT patient_id, site_id, ssn, encounter_type FROM clinical.patients JOIN clinical.encounters USING (patient_id, site_id)
SELECT patient_id, ssn, encounter_id FROM clinical.patients JOIN clinical.encounters USING (patient_id)
SELECT patient_id, site_id, claim_id, last_name FROM clinical.patients LEFT JOIN claims.claims USING (patient_id, site_id)
SELECT * FROM clinical.patients NATURAL JOIN clinical.encounters
SELECT * FROM clinical.encounters NATURAL JOIN claims.claims
SELECT patient_id, site_id, last_name FROM clinical.patients NATURAL LEFT JOIN claims.claims
SELECT a.patient_id, a.last_name, b.patient_id AS other_patient_id, b.ssn FROM clinical.patients a JOIN clinical.patients b ON a.last_name = b.last_name AND a.patient_id < b.patient_id AND a.patient_id < 300
SELECT a.patient_id, a.site_id, b.site_id AS b_site_id FROM clinical.patients a JOIN clinical.patients b ON a.zip = b.zip AND a.patient_id <> b.patient_id AND a.patient_id < 100
SELECT a.ssn, b.ssn AS ssn2, a.patient_id FROM clinical.patients a LEFT JOIN clinical.patients b ON a.ssn = b.ssn
SELECT e1.patient_id, e1.site_id, e2.site_id AS other_site_id FROM clinical.encounters e1 JOIN clinical.encounters e2 ON e1.patient_id = e2.patient_id AND e1.encounter_id < e2.encounter_id AND e1.site_id <> e2.site_id
SELECT o.patient_id, o.observed_at, e.site_id, p.last_name FROM clinical.observations o JOIN clinical.encounters e ON e.encounter_id = o.encounter_id JOIN clinical.patients p ON p.patient_id = o.patient_id LIMIT 2000
SELECT o.patient_id, e.site_id FROM clinical.observations o LEFT JOIN clinical.encounters e USING (encounter_id) LIMIT 3000
SELECT p.patient_id, p.birth_date, c.service_date, c.site_id FROM claims.claims c JOIN clinical.patients p ON p.patient_id = c.patient_id AND p.birth_date < c.service_date
SELECT p.patient_id, p.zip, c.payer FROM clinical.patients p JOIN claims.claims c ON c.patient_id = p.patient_id AND c.site_id = p.site_id WHERE c.status = 'paid'
SELECT p.patient_id, p.first_name, e.site_id FROM clinical.encounters e JOIN clinical.patients p ON p.patient_id = e.patient_id WHERE e.site_id = 'S03'
SELECT v.k, p.patient_id, p.ssn, p.site_id FROM (VALUES (1, 'S01'), (2, 'S02'), (3, 'S03')) AS v(k, s) JOIN clinical.patients p ON p.site_id = v.s
SELECT v.pid AS wanted_id, p.patient_id, p.last_name, p.site_id FROM (VALUES (1), (2), (3), (4), (5), (100), (1000), (1999)) AS v(pid) LEFT JOIN clinical.patients p ON p.patient_id = v.pid
SELECT v.name AS last_name, p.patient_id FROM (VALUES ('Smith'), ('Nguyen'), ('Garcia')) AS v(name) JOIN clinical.patients p ON p.last_name = v.name
SELECT p.patient_id, p.ssn FROM clinical.patients p JOIN (SELECT DISTINCT patient_id FROM claims.claims WHERE site_id = 'S04') c ON c.patient_id = p.patient_id
SELECT p.patient_id, p.last_name, x.n FROM clinical.patients p JOIN (SELECT patient_id, count(*) AS n FROM clinical.encounters GROUP BY patient_id) x ON x.patient_id = p.patient_id

-- ---- subqueries: scalar, correlated, EXISTS, IN, NOT IN ----------------------
SELECT patient_id, site_id, (SELECT count(*) FROM clinical.encounters e WHERE e.patient_id = p.patient_id) AS n_enc FROM clinical.patients p
SELECT patient_id, (SELECT max(site_id) FROM clinical.encounters e WHERE e.patient_id = p.patient_id) AS site_id FROM clinical.patients p
SELECT encounter_id, (SELECT max(last_name) FROM clinical.patients p WHERE p.patient_id = e.patient_id) AS last_name, site_id FROM clinical.encounters e
SELECT claim_id, (SELECT max(ssn) FROM clinical.patients p WHERE p.patient_id = c.patient_id) AS ssn, site_id FROM claims.claims c
SELECT (SELECT max(ssn) FROM clinical.patients) AS ssn, (SELECT min(last_name) FROM clinical.patients) AS last_name, (SELECT max(site_id) FROM clinical.encounters) AS site_id
SELECT (SELECT count(*) FROM clinical.patients) AS n_patients
SELECT DISTINCT (SELECT max(site_id) FROM clinical.encounters) AS site_id FROM claims.claims
SELECT patient_id, ssn, site_id FROM clinical.patients p WHERE EXISTS (SELECT 1 FROM clinical.encounters e WHERE e.patient_id = p.patient_id AND e.site_id <> 'S01')
SELECT patient_id, last_name FROM clinical.patients p WHERE NOT EXISTS (SELECT 1 FROM claims.claims c WHERE c.patient_id = p.patient_id)
SELECT patient_id, mrn, site_id FROM clinical.patients WHERE patient_id IN (SELECT patient_id FROM clinical.encounters WHERE site_id = 'S02')
SELECT patient_id, mrn, site_id FROM clinical.patients WHERE patient_id NOT IN (SELECT patient_id FROM claims.claims)
SELECT patient_id, site_id FROM claims.claims WHERE patient_id NOT IN (SELECT patient_id FROM clinical.patients)
SELECT patient_id, site_id FROM clinical.encounters WHERE site_id IN (SELECT site_id FROM clinical.patients WHERE site_id <> 'S01')
SELECT patient_id, ssn FROM clinical.patients WHERE ssn = (SELECT max(ssn) FROM clinical.patients)
SELECT patient_id, birth_date FROM clinical.patients WHERE birth_date = (SELECT min(birth_date) FROM clinical.patients)
SELECT patient_id, last_name FROM clinical.patients p WHERE site_id = (SELECT min(site_id) FROM clinical.encounters e WHERE e.patient_id = p.patient_id)
SELECT patient_id, zip FROM clinical.patients WHERE zip IN (SELECT zip FROM clinical.patients WHERE site_id = 'S07')
SELECT patient_id, site_id FROM clinical.patients WHERE patient_id > ALL (SELECT patient_id FROM clinical.patients WHERE site_id = 'S09' AND patient_id < 50)
SELECT patient_id, email FROM clinical.patients p WHERE EXISTS (SELECT 1 FROM clinical.observations o WHERE o.patient_id = p.patient_id AND o.value_num > 100)

-- ---- derived tables ----------------------------------------------------------
SELECT patient_id, site_id FROM (SELECT * FROM clinical.patients) sub
SELECT patient_id, site_id, ssn FROM (SELECT * FROM clinical.patients WHERE site_id <> 'S01') sub
SELECT s, l FROM (SELECT ssn AS s, last_name AS l FROM (SELECT * FROM (SELECT * FROM clinical.patients) a) b) c
SELECT * FROM (SELECT patient_id, mrn, ssn FROM clinical.patients ORDER BY patient_id LIMIT 500) t WHERE t.patient_id > 10
SELECT q.site_id, q.n_site FROM (SELECT site_id, count(*) AS n_site FROM clinical.patients GROUP BY site_id) q
SELECT z.zz AS zip, z.pid AS patient_id FROM (SELECT zip AS zz, patient_id AS pid FROM clinical.patients) AS z(zz, pid)
SELECT t.a AS ssn FROM (SELECT ssn AS a FROM clinical.patients UNION ALL SELECT ssn FROM clinical.patients) t

-- ---- CTEs, recursive, shadowing ----------------------------------------------
WITH x AS (SELECT * FROM clinical.patients) SELECT patient_id, ssn, site_id FROM x
WITH patients AS (SELECT * FROM clinical.patients) SELECT patient_id, last_name, site_id FROM patients
WITH encounters AS (SELECT * FROM clinical.patients) SELECT patient_id, ssn, site_id FROM encounters
WITH claims AS (SELECT patient_id, ssn, site_id FROM clinical.patients) SELECT * FROM claims
WITH a AS (SELECT patient_id, site_id FROM clinical.encounters), b AS (SELECT a.patient_id, p.last_name, a.site_id FROM a JOIN clinical.patients p USING (patient_id)) SELECT * FROM b
WITH a AS (SELECT * FROM clinical.patients), b AS (SELECT * FROM a WHERE site_id = 'S02') SELECT patient_id, ssn, site_id FROM b
WITH RECURSIVE r AS (SELECT patient_id, site_id FROM clinical.patients) SELECT * FROM r
WITH RECURSIVE r(n, patient_id, ssn, site_id) AS (SELECT 1, patient_id, ssn, site_id FROM clinical.patients WHERE patient_id < 50 UNION ALL SELECT n + 1, patient_id, ssn, site_id FROM r WHERE n < 3) SELECT * FROM r
WITH RECURSIVE chain(patient_id, depth) AS (SELECT min(patient_id), 0 FROM clinical.patients UNION ALL SELECT p.patient_id, c.depth + 1 FROM chain c JOIN clinical.patients p ON p.patient_id = c.patient_id + 1 WHERE c.depth < 20) SELECT c.patient_id, p.last_name, p.site_id FROM chain c JOIN clinical.patients p USING (patient_id)
WITH RECURSIVE ids(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM ids WHERE i < 2000) SELECT p.patient_id, p.ssn, p.site_id FROM ids JOIN clinical.patients p ON p.patient_id = ids.i
WITH RECURSIVE sites(s) AS (SELECT 1 UNION ALL SELECT s + 1 FROM sites WHERE s < 12) SELECT 'S' || lpad(CAST(s AS VARCHAR), 2, '0') AS wanted, p.patient_id, p.site_id FROM sites JOIN clinical.patients p ON p.site_id = 'S' || lpad(CAST(s AS VARCHAR), 2, '0')
WITH t AS (SELECT patient_id, mrn FROM clinical.patients) SELECT t1.mrn, t2.patient_id FROM t t1 JOIN t t2 ON t1.patient_id = t2.patient_id
WITH v(site) AS (VALUES ('S01'), ('S06')) SELECT p.patient_id, p.ssn, p.site_id FROM clinical.patients p JOIN v ON v.site = p.site_id
WITH "Patients" AS (SELECT * FROM "clinical"."patients") SELECT patient_id, email, site_id FROM "Patients"

-- ---- set operations ----------------------------------------------------------
SELECT patient_id, site_id FROM clinical.patients UNION SELECT patient_id, site_id FROM clinical.encounters
SELECT patient_id, site_id FROM clinical.patients UNION ALL SELECT patient_id, site_id FROM claims.claims
SELECT site_id FROM clinical.encounters UNION ALL SELECT site_id FROM claims.claims
SELECT patient_id, site_id FROM clinical.patients INTERSECT SELECT patient_id, site_id FROM clinical.encounters
SELECT patient_id, site_id FROM clinical.encounters INTERSECT ALL SELECT patient_id, site_id FROM claims.claims
SELECT patient_id, site_id FROM clinical.patients EXCEPT SELECT patient_id, site_id FROM clinical.patients WHERE site_id = 'S01'
SELECT patient_id, site_id FROM clinical.encounters EXCEPT ALL SELECT patient_id, site_id FROM claims.claims
SELECT ssn FROM clinical.patients UNION SELECT last_name FROM clinical.patients
SELECT mrn AS v FROM clinical.patients UNION ALL SELECT phone FROM clinical.patients UNION ALL SELECT email FROM clinical.patients
SELECT first_name AS name FROM clinical.patients INTERSECT SELECT last_name FROM clinical.patients
SELECT last_name FROM clinical.patients EXCEPT SELECT first_name FROM clinical.patients
SELECT patient_id, 'S99' AS site_id FROM clinical.patients WHERE false UNION SELECT patient_id, site_id FROM clinical.patients
SELECT CAST(birth_date AS VARCHAR) AS v FROM clinical.patients UNION SELECT zip FROM clinical.patients
SELECT * FROM (SELECT patient_id, site_id FROM clinical.patients UNION SELECT patient_id, site_id FROM claims.claims) u WHERE u.site_id <> 'S01'

-- ---- GROUP BY, HAVING, aggregates --------------------------------------------
SELECT count(*) AS n_patients FROM clinical.patients
SELECT count(*) AS n_patients FROM "clinical"."patients" p WHERE p.site_id IS NOT NULL OR p.site_id IS NULL
SELECT count(DISTINCT patient_id) AS n_patients FROM clinical.patients
SELECT site_id, count(*) AS n FROM clinical.patients GROUP BY site_id
SELECT site_id, count(*) AS n FROM clinical.encounters GROUP BY site_id HAVING count(*) > 0
SELECT last_name, count(*) AS n FROM clinical.patients GROUP BY last_name HAVING count(*) > 1
SELECT zip, count(*) AS n FROM clinical.patients GROUP BY zip ORDER BY n DESC
SELECT birth_date, count(*) AS n FROM clinical.patients GROUP BY birth_date
SELECT ssn, count(*) AS n FROM clinical.patients GROUP BY ssn
SELECT site_id, min(ssn) AS min_ssn, max(ssn) AS max_ssn, min(last_name) AS min_last_name, max(email) AS max_email FROM clinical.patients GROUP BY site_id
SELECT min(mrn) AS min_mrn, max(mrn) AS max_mrn, min(phone) AS min_phone, max(birth_date) AS max_birth_date, min(zip) AS min_zip FROM clinical.patients
SELECT string_agg(last_name, ',') AS names, site_id FROM clinical.patients GROUP BY site_id
SELECT array_agg(ssn) AS ssns, site_id FROM clinical.patients GROUP BY site_id
SELECT site_id, array_agg(DISTINCT zip) AS zips FROM clinical.patients GROUP BY site_id
SELECT first_value(ssn) AS any_ssn FROM (SELECT ssn FROM clinical.patients ORDER BY patient_id) t
SELECT site_id, count(ssn) AS with_ssn, count(email) AS with_email, count(phone) AS with_phone FROM clinical.patients GROUP BY site_id
SELECT sex, site_id, count(*) AS n FROM clinical.patients GROUP BY GROUPING SETS ((sex), (site_id), ())
SELECT site_id, sex, count(*) AS n FROM clinical.patients GROUP BY ROLLUP (site_id, sex)
SELECT site_id, sum(billed_amount) AS billed FROM claims.claims GROUP BY site_id
SELECT patient_id, site_id, count(*) AS n FROM claims.claims GROUP BY patient_id, site_id HAVING count(*) >= 2
SELECT substr(ssn, 8) AS last4, count(*) AS n FROM clinical.patients GROUP BY substr(ssn, 8)
SELECT EXTRACT(YEAR FROM birth_date) AS y, count(*) AS n FROM clinical.patients GROUP BY 1 ORDER BY 1
SELECT max(CASE WHEN site_id = 'S02' THEN ssn END) AS s02_ssn, max(CASE WHEN site_id = 'S02' THEN site_id END) AS site_id FROM clinical.patients

-- ---- window functions --------------------------------------------------------
SELECT patient_id, ssn, row_number() OVER (PARTITION BY site_id ORDER BY patient_id) AS rn, site_id FROM clinical.patients
SELECT patient_id, last_name, rank() OVER (ORDER BY last_name) AS r FROM clinical.patients
SELECT patient_id, lag(ssn) OVER (ORDER BY patient_id) AS prev_ssn, lead(last_name) OVER (ORDER BY patient_id) AS next_last_name FROM clinical.patients
SELECT patient_id, first_value(email) OVER (PARTITION BY site_id ORDER BY patient_id) AS first_email, site_id FROM clinical.patients
SELECT patient_id, last_value(mrn) OVER (ORDER BY patient_id ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS last_mrn FROM clinical.patients
SELECT patient_id, count(*) OVER (PARTITION BY zip) AS same_zip, zip FROM clinical.patients
SELECT patient_id, nth_value(phone, 2) OVER (PARTITION BY site_id ORDER BY patient_id) AS second_phone, site_id FROM clinical.patients
SELECT patient_id, site_id, dense_rank() OVER (PARTITION BY birth_date ORDER BY patient_id) AS dr, birth_date FROM clinical.patients
SELECT e.patient_id, e.site_id, count(*) OVER (PARTITION BY e.site_id) AS per_site FROM clinical.encounters e
SELECT * FROM (SELECT patient_id, ssn, site_id, row_number() OVER (PARTITION BY site_id ORDER BY ssn) AS rn FROM clinical.patients) w WHERE rn <= 3
SELECT patient_id, max(site_id) OVER () AS site_id FROM clinical.encounters
SELECT patient_id, string_agg(last_name, ';') OVER (PARTITION BY site_id) AS names FROM clinical.patients WHERE patient_id < 300

-- ---- leaky predicates, error probes -------------------------------------------
SELECT patient_id, site_id FROM clinical.patients WHERE 1 / (CASE WHEN site_id = 'S02' THEN 0 ELSE 1 END) = 1
SELECT patient_id, site_id FROM clinical.patients p WHERE CAST(CASE WHEN p.site_id = 'S03' THEN 'x' ELSE '1' END AS INT) = 1
SELECT patient_id, ssn FROM clinical.patients WHERE CAST(ssn AS INT) > 0
SELECT patient_id, last_name FROM clinical.patients WHERE CAST(last_name AS INT) = 1
SELECT patient_id, site_id FROM clinical.patients WHERE CAST(email AS DATE) IS NOT NULL
SELECT CAST(ssn AS BIGINT) AS n, patient_id FROM clinical.patients
SELECT patient_id, mrn FROM clinical.patients WHERE mrn = 'MRN00000002' OR mrn = 'MRN00001500'
SELECT patient_id, ssn FROM clinical.patients WHERE ssn LIKE '1%' OR ssn LIKE '2%'
SELECT patient_id, zip FROM clinical.patients WHERE zip = '02134' OR zip LIKE '021%'

-- ---- EXPLAIN -------------------------------------------------------------------
EXPLAIN SELECT patient_id, ssn, site_id FROM clinical.patients
EXPLAIN SELECT p.patient_id, p.last_name, e.site_id FROM clinical.patients p JOIN clinical.encounters e USING (patient_id)
EXPLAIN VERBOSE SELECT patient_id, mrn FROM clinical.patients WHERE site_id = 'S02'
EXPLAIN ANALYZE SELECT patient_id, ssn, site_id FROM clinical.patients WHERE site_id <> 'S01'
EXPLAIN WITH x AS (SELECT * FROM claims.claims) SELECT patient_id, site_id FROM x

-- ---- encounters, observations, claims ------------------------------------------
SELECT encounter_id, patient_id, site_id, admit_ts, discharge_ts FROM clinical.encounters WHERE site_id <> 'S01'
SELECT patient_id, site_id, encounter_type, primary_dx FROM clinical.encounters ORDER BY admit_ts DESC LIMIT 100
SELECT observation_id, patient_id, encounter_id, observed_at FROM clinical.observations WHERE encounter_id IN (SELECT encounter_id FROM clinical.encounters WHERE site_id = 'S05') LIMIT 2000
SELECT claim_id, patient_id, site_id, service_date, billed_amount FROM claims.claims WHERE site_id = 'S12'
SELECT patient_id, site_id, payer, status, denial_reason FROM claims.claims WHERE status = 'denied'
SELECT c.patient_id, c.site_id, e.site_id AS encounter_site_id FROM claims.claims c JOIN clinical.encounters e ON e.patient_id = c.patient_id AND e.site_id <> c.site_id
SELECT o.patient_id, o.loinc_code, o.value_num FROM clinical.observations o WHERE o.patient_id IN (SELECT patient_id FROM clinical.patients WHERE site_id = 'S08') LIMIT 2000
SELECT patient_id, count(*) AS n FROM clinical.observations GROUP BY patient_id
SELECT patient_id, site_id FROM clinical.encounters WHERE encounter_id IN (SELECT encounter_id FROM clinical.observations) LIMIT 3000

-- ---- catalog dialect next to patient data; quoted names with dots ------------
SELECT p.patient_id, p.ssn, p.site_id FROM clinical.patients p, generate_series(1, 3) WHERE 'x'::regclass IS NULL
SELECT p.patient_id, p.ssn, p.site_id, pg_catalog.version() AS v FROM clinical.patients p, generate_series(1, 3)
SELECT p.patient_id, p.site_id, (SELECT count(*) FROM claims.claims c WHERE c.patient_id = p.patient_id) AS n FROM clinical.patients p WHERE 'clinical.patients'::regclass IS NOT NULL
SELECT p.patient_id, p.ssn, p.site_id FROM clinical.patients p, pg_catalog.pg_class c WHERE c.relname = 'patients'
WITH "clinical.patients" AS (SELECT 'x' AS ssn, 'S02' AS site_id, -1 AS patient_id) SELECT * FROM clinical.patients
WITH "clinical.patients" AS (SELECT 'x' AS ssn) SELECT patient_id, ssn, site_id FROM datafusion.clinical.patients
WITH "datafusion.clinical.patients" AS (SELECT 'x' AS ssn) SELECT * FROM datafusion.clinical.patients
WITH "clinical.patients" AS (SELECT * FROM clinical.patients WHERE site_id = 'S02') SELECT c.patient_id, c.ssn, c.site_id FROM "clinical.patients" c
SELECT patient_id, ssn, site_id FROM "clinical.patients"
