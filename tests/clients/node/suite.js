// node-postgres (pg) against lakeward. Driven by tests/it/clients.rs:
//
//   node tests/clients/node/suite.js   (after npm ci --prefix tests/clients/node)
//
// The connection comes from LAKEWARD_HOST, LAKEWARD_PORT, LAKEWARD_USER,
// LAKEWARD_TOKEN (the password), LAKEWARD_PURPOSE and LAKEWARD_CA (the
// server's certificate: TLS verified against it). LAKEWARD_ROLE picks the
// auditor's checks (defaults to the user name). The program prints ONE JSON
// object on stdout: for every step either {"ok": <what was observed>} or
// {"error": {"sqlstate": ..., "message": ...}} when the server refused it. The
// Rust test decides what is expected per role. Anything else (no connection, a
// client-side failure) is an unexpected exception: stack on stderr, exit 1.

'use strict';

const fs = require('fs');
const { Client } = require('pg');

const TABLES = [
  'clinical.patients',
  'clinical.encounters',
  'clinical.observations',
  'claims.claims',
  'governance.consents',
  'audit.access_log',
];

// One column of each SPEC §2 type: label -> query returning one row, one column.
const TYPE_QUERIES = {
  bigint: 'SELECT patient_id FROM clinical.patients ORDER BY patient_id LIMIT 1',
  text: 'SELECT site_id FROM clinical.patients ORDER BY patient_id LIMIT 1',
  date: 'SELECT birth_date FROM clinical.patients WHERE birth_date IS NOT NULL ORDER BY patient_id LIMIT 1',
  boolean: 'SELECT deceased FROM clinical.patients WHERE deceased IS NOT NULL ORDER BY patient_id LIMIT 1',
  timestamp: 'SELECT admit_ts FROM clinical.encounters WHERE admit_ts IS NOT NULL ORDER BY encounter_id LIMIT 1',
  double: 'SELECT value_num FROM clinical.observations WHERE value_num IS NOT NULL ORDER BY observation_id LIMIT 1',
  decimal: 'SELECT billed_amount FROM claims.claims WHERE billed_amount IS NOT NULL ORDER BY claim_id LIMIT 1',
};

const AUDIT_TYPE_QUERIES = {
  bigint: 'SELECT seq FROM audit.access_log WHERE seq IS NOT NULL ORDER BY ts LIMIT 1',
  text: 'SELECT "user" FROM audit.access_log WHERE "user" IS NOT NULL ORDER BY ts LIMIT 1',
  timestamp: 'SELECT ts FROM audit.access_log ORDER BY ts LIMIT 1',
  double: 'SELECT duration_ms FROM audit.access_log WHERE duration_ms IS NOT NULL ORDER BY ts LIMIT 1',
};

function env(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`environment variable ${name} is not set`);
  }
  return v;
}

const out = {};

// A server refusal (an error with a SQLSTATE in .code) is recorded; anything
// else propagates and fails the program.
function refusal(e) {
  if (e && typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && e.severity) {
    return { error: { sqlstate: e.code, severity: e.severity, message: e.message } };
  }
  throw e;
}

async function step(name, f) {
  try {
    out[name] = { ok: await f() };
  } catch (e) {
    out[name] = refusal(e);
  }
}

function describe(v) {
  return {
    js_type: typeof v,
    ctor: v === null || v === undefined ? null : v.constructor.name,
    value: v instanceof Date ? v.toISOString() : v === null ? null : String(v),
  };
}

async function main() {
  const user = env('LAKEWARD_USER');
  const role = process.env.LAKEWARD_ROLE || user;
  const auditor = role === 'auditor';
  const client = new Client({
    host: env('LAKEWARD_HOST'),
    port: Number(env('LAKEWARD_PORT')),
    user,
    password: env('LAKEWARD_TOKEN'),
    database: 'lakeward',
    // TLS required, the server certificate verified against the test CA;
    // the development certificate is issued to localhost and 127.0.0.1.
    ssl: { ca: fs.readFileSync(env('LAKEWARD_CA')), servername: 'localhost' },
    options: `-c lakeward.purpose=${env('LAKEWARD_PURPOSE')}`,
    application_name: 'lakeward-node-suite',
    connectionTimeoutMillis: 10000,
    query_timeout: 60000,
  });
  await client.connect();
  out.connection = {
    ssl: client.connection.stream.encrypted === true,
    protocol: typeof client.connection.stream.getProtocol === 'function'
      ? client.connection.stream.getProtocol() : null,
  };

  await step('tables', async () => {
    const r = await client.query(
      'SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2');
    return r.rows.map((x) => `${x.table_schema}.${x.table_name}`);
  });

  const counts = {};
  for (const t of TABLES) {
    try {
      const r = await client.query(`SELECT count(*) AS n FROM ${t}`);
      counts[t] = { ok: r.rows[0].n };
    } catch (e) {
      counts[t] = refusal(e);
    }
  }
  out.counts = counts;

  if (!auditor) {
    await step('params', async () => {
      const first = await client.query(
        'SELECT patient_id, site_id FROM clinical.patients ORDER BY patient_id LIMIT 1 OFFSET 3');
      const { patient_id: id, site_id: site } = first.rows[0];
      // $1 is the int8 id as node-pg gives it back (a string), $2 text.
      const r = await client.query(
        'SELECT patient_id, site_id FROM clinical.patients WHERE patient_id = $1 AND site_id = $2',
        [id, site]);
      // A JavaScript number for a BIGINT parameter (an encounter id: the
      // researcher's pseudonymous patient ids are beyond 2^53).
      const enc = await client.query(
        'SELECT encounter_id FROM clinical.encounters ORDER BY encounter_id LIMIT 1');
      const n = await client.query(
        'SELECT count(*) AS n FROM clinical.encounters WHERE encounter_id = $1',
        [Number(enc.rows[0].encounter_id)]);
      return {
        id,
        site,
        rows: r.rows.map((x) => [x.patient_id, x.site_id]),
        count_with_number_param: n.rows[0].n,
      };
    });
  }

  await step('types', async () => {
    const res = {};
    for (const [label, sql] of Object.entries(auditor ? AUDIT_TYPE_QUERIES : TYPE_QUERIES)) {
      try {
        const r = await client.query(sql);
        res[label] = { ...describe(r.rows[0][r.fields[0].name]), type_oid: r.fields[0].dataTypeID };
      } catch (e) {
        res[label] = refusal(e);
      }
    }
    return res;
  });

  // Errors carry the SQLSTATE in .code.
  const denied = auditor ? 'clinical.patients' : 'governance.consents';
  await step('denied_table', async () => {
    await client.query(`SELECT * FROM ${denied} LIMIT 1`);
    return `read ${denied}`;
  });
  await step('denied_table_extended', async () => {
    await client.query(`SELECT * FROM ${denied} WHERE $1::int = 1 LIMIT 1`, [1]);
    return `read ${denied}`;
  });
  await step('syntax_error', async () => {
    await client.query('SELEKT 1');
    return 'parsed';
  });
  // The connection is still usable after errors.
  await step('after_errors', async () => (await client.query('SELECT 1 AS one')).rows[0].one);

  await client.end();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
