-- Grafana's PostgreSQL data source (grafana-postgresql-datasource): the
-- health check ("Save & test"), the feature auto-detection of the
-- configuration page, the SQL query editor's table and column lists, and
-- the backend schema handler. Grafana cannot run here: the statements are
-- taken from github:grafana/grafana (files named in "-- source:") with the
-- table the editor asks about set to clinical.patients (Grafana lists it
-- schema-qualified when its schema is not on the search_path), and pgx
-- bind parameters written inline ("-- binds:").

-- name: health check (pgx Ping)
-- source: pkg/tsdb/grafana-postgresql-datasource/pgx/handler_checkhealth.go calls Ping; jackc/pgx v5 pgconn.PgConn.Ping sends "-- ping"
-- ping

-- name: getVersion
-- source: public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts getVersion (configuration/useAutoDetectFeatures.ts)
SELECT current_setting('server_version_num')::int/100 as version;

-- name: getTimescaleDBVersion
-- source: public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts getTimescaleDBVersion (configuration/useAutoDetectFeatures.ts)
SELECT extversion FROM pg_extension WHERE extname = 'timescaledb';

-- name: showTables (query editor table list)
-- source: public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts showTables with buildSchemaConstraint
-- expect: patients
SELECT
    CASE WHEN 
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN 
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          ) THEN 0 ELSE 1 END, 1;

-- name: getSchema('clinical.patients') (query editor column list)
-- source: public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts getSchema, called by datasource.ts fetchFields
-- expect-column: a column of the target table (patient_id; event_id when retargeted)
SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('clinical.patients'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('clinical.patients'))[1]
          AND quote_ident(table_name) = (parse_ident('clinical.patients'))[2]
        ELSE quote_ident(table_name) = 'clinical.patients'
          AND 
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )
      END;

-- name: schema handler: querySchemas
-- source: pkg/tsdb/grafana-postgresql-datasource/schema.go querySchemas
-- expect: clinical
SELECT schema_name FROM information_schema.schemata
		 WHERE schema_name NOT LIKE 'pg_%' AND schema_name != 'information_schema'
		 ORDER BY schema_name;

-- name: schema handler: queryTables('clinical')
-- source: pkg/tsdb/grafana-postgresql-datasource/schema.go queryTables
-- binds: $1 = 'clinical'
-- expect: patients
SELECT table_name FROM information_schema.tables
		 WHERE table_schema = 'clinical' AND table_type IN ('BASE TABLE', 'VIEW')
		 ORDER BY table_name;

-- name: schema handler: queryColumns('clinical', 'patients')
-- source: pkg/tsdb/grafana-postgresql-datasource/schema.go queryColumns
-- binds: $1 = 'clinical', $2 = 'patients'
-- expect-column: a column of the target table (patient_id; event_id when retargeted)
SELECT column_name, data_type, udt_name, numeric_precision, numeric_scale
		 FROM information_schema.columns
		 WHERE table_schema = 'clinical' AND table_name = 'patients'
		 ORDER BY ordinal_position;
