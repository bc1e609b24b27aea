// pgJDBC against lakeward. Driven by tests/it/clients.rs:
//
//   javac -cp /usr/share/java/postgresql.jar -d OUT JdbcSuite.java
//   java -cp OUT:/usr/share/java/postgresql.jar JdbcSuite
//
// The connection comes from LAKEWARD_HOST, LAKEWARD_PORT, LAKEWARD_USER,
// LAKEWARD_TOKEN (the password) and LAKEWARD_PURPOSE (LAKEWARD_ROLE picks the
// auditor's checks; it defaults to the user name). The program prints ONE JSON
// object on stdout: for every step either {"ok": <what was observed>} or
// {"error": {"sqlstate": ..., "message": ...}} when the server refused it. The
// Rust test decides what is expected per role. Anything else that goes wrong
// (no connection, a client-side failure) is an unexpected exception: stack
// trace on stderr, exit status 1.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

public class JdbcSuite {
    /** Every table of SPEC §2 plus the audit log, queryable or not. */
    static final String[] TABLES = {
        "clinical.patients", "clinical.encounters", "clinical.observations",
        "claims.claims", "governance.consents", "audit.access_log",
    };

    /** One column of each SPEC §2 type: (label, query returning one row, one column). */
    static final String[][] TYPE_QUERIES = {
        {"bigint", "SELECT patient_id FROM clinical.patients ORDER BY patient_id LIMIT 1"},
        {"text", "SELECT site_id FROM clinical.patients ORDER BY patient_id LIMIT 1"},
        {"date", "SELECT birth_date FROM clinical.patients WHERE birth_date IS NOT NULL ORDER BY patient_id LIMIT 1"},
        {"boolean", "SELECT deceased FROM clinical.patients WHERE deceased IS NOT NULL ORDER BY patient_id LIMIT 1"},
        {"timestamp", "SELECT admit_ts FROM clinical.encounters WHERE admit_ts IS NOT NULL ORDER BY encounter_id LIMIT 1"},
        {"double", "SELECT value_num FROM clinical.observations WHERE value_num IS NOT NULL ORDER BY observation_id LIMIT 1"},
        {"decimal", "SELECT billed_amount FROM claims.claims WHERE billed_amount IS NOT NULL ORDER BY claim_id LIMIT 1"},
    };

    /** The auditor's columns: the audit log's own types. */
    static final String[][] AUDIT_TYPE_QUERIES = {
        {"bigint", "SELECT seq FROM audit.access_log WHERE seq IS NOT NULL ORDER BY ts LIMIT 1"},
        {"text", "SELECT \"user\" FROM audit.access_log WHERE \"user\" IS NOT NULL ORDER BY ts LIMIT 1"},
        {"timestamp", "SELECT ts FROM audit.access_log ORDER BY ts LIMIT 1"},
        {"double", "SELECT duration_ms FROM audit.access_log WHERE duration_ms IS NOT NULL ORDER BY ts LIMIT 1"},
    };

    static final Map<String, Object> out = new LinkedHashMap<>();
    static Connection conn;

    interface Step {
        Object run() throws Exception;
    }

    /** Run one step; a server refusal (SQLException) is recorded, anything else is fatal. */
    static void step(String name, Step s) throws Exception {
        Map<String, Object> r = new LinkedHashMap<>();
        try {
            r.put("ok", s.run());
        } catch (SQLException e) {
            Map<String, Object> err = new LinkedHashMap<>();
            err.put("sqlstate", e.getSQLState());
            err.put("message", e.getMessage());
            r.put("error", err);
            try {
                if (!conn.getAutoCommit()) {
                    conn.rollback();
                    conn.setAutoCommit(true);
                }
            } catch (SQLException ignored) {
                // The connection's state is reported by the next step.
            }
        }
        out.put(name, r);
    }

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) {
            throw new IllegalStateException("environment variable " + name + " is not set");
        }
        return v;
    }

    public static void main(String[] args) throws Exception {
        String host = env("LAKEWARD_HOST");
        String port = env("LAKEWARD_PORT");
        String user = env("LAKEWARD_USER");
        String purpose = env("LAKEWARD_PURPOSE");
        String role = System.getenv("LAKEWARD_ROLE");
        boolean auditor = "auditor".equals(role == null ? user : role);

        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("password", env("LAKEWARD_TOKEN"));
        props.setProperty("sslmode", "require");
        props.setProperty("options", "-c lakeward.purpose=" + purpose);
        props.setProperty("ApplicationName", "lakeward-jdbc-suite");
        props.setProperty("binaryTransfer", "true");
        props.setProperty("prepareThreshold", "5");
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "60");
        String url = "jdbc:postgresql://" + host + ":" + port + "/lakeward";
        conn = DriverManager.getConnection(url, props);

        DatabaseMetaData md = conn.getMetaData();
        Map<String, Object> info = new LinkedHashMap<>();
        info.put("product", md.getDatabaseProductName());
        info.put("product_version", md.getDatabaseProductVersion());
        info.put("driver_version", md.getDriverVersion());
        out.put("server", info);

        step("schemas", () -> {
            List<Object> schemas = new ArrayList<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) {
                    schemas.add(rs.getString("TABLE_SCHEM"));
                }
            }
            return schemas;
        });

        step("tables", () -> {
            List<Object> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, null, "%", new String[] {"TABLE", "VIEW"})) {
                while (rs.next()) {
                    Map<String, Object> t = new LinkedHashMap<>();
                    t.put("schema", rs.getString("TABLE_SCHEM"));
                    t.put("name", rs.getString("TABLE_NAME"));
                    t.put("type", rs.getString("TABLE_TYPE"));
                    tables.add(t);
                }
            }
            return tables;
        });

        step("patients_columns", () -> {
            List<Object> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "clinical", "patients", null)) {
                while (rs.next()) {
                    Map<String, Object> c = new LinkedHashMap<>();
                    c.put("name", rs.getString("COLUMN_NAME"));
                    c.put("type_name", rs.getString("TYPE_NAME"));
                    c.put("data_type", rs.getInt("DATA_TYPE"));
                    c.put("position", rs.getInt("ORDINAL_POSITION"));
                    cols.add(c);
                }
            }
            return cols;
        });

        step("access_log_columns", () -> {
            List<Object> cols = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "audit", "access_log", null)) {
                while (rs.next()) {
                    cols.add(rs.getString("COLUMN_NAME"));
                }
            }
            return cols;
        });

        step("primary_keys", () -> {
            List<Object> keys = new ArrayList<>();
            try (ResultSet rs = md.getPrimaryKeys(null, "clinical", "patients")) {
                while (rs.next()) {
                    keys.add(rs.getString("COLUMN_NAME"));
                }
            }
            return keys;
        });

        // PostgreSQL keywords beyond SQL:2003, which DBeaver and other
        // JDBC tools use to highlight and quote.
        step("sql_keywords", () -> md.getSQLKeywords());

        step("type_info", () -> {
            List<Object> names = new ArrayList<>();
            try (ResultSet rs = md.getTypeInfo()) {
                while (rs.next()) {
                    names.add(rs.getString("TYPE_NAME"));
                }
            }
            return names;
        });

        // One question per statement: a refusal of one does not hide the other.
        for (String[] t : new String[][] {
                {"has_table_privilege_patients", "clinical.patients"},
                {"has_table_privilege_access_log", "audit.access_log"}}) {
            step(t[0], () -> {
                try (Statement st = conn.createStatement();
                     ResultSet rs = st.executeQuery(
                         "SELECT has_table_privilege('" + t[1] + "', 'SELECT')")) {
                    rs.next();
                    return rs.getBoolean(1);
                }
            });
        }

        Map<String, Object> counts = new LinkedHashMap<>();
        for (String t : TABLES) {
            Map<String, Object> r = new LinkedHashMap<>();
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT count(*) FROM " + t)) {
                rs.next();
                r.put("ok", rs.getLong(1));
            } catch (SQLException e) {
                Map<String, Object> err = new LinkedHashMap<>();
                err.put("sqlstate", e.getSQLState());
                err.put("message", e.getMessage());
                r.put("error", err);
            }
            counts.put(t, r);
        }
        out.put("counts", counts);

        if (!auditor) {
            step("patients_sites", () -> {
                Map<String, Object> m = new LinkedHashMap<>();
                try (Statement st = conn.createStatement();
                     ResultSet rs = st.executeQuery(
                         "SELECT count(*), count(DISTINCT site_id), min(site_id), max(site_id) "
                             + "FROM clinical.patients")) {
                    rs.next();
                    m.put("rows", rs.getLong(1));
                    m.put("sites", rs.getLong(2));
                    m.put("min_site", rs.getString(3));
                    m.put("max_site", rs.getString(4));
                }
                return m;
            });
            step("prepared", JdbcSuite::prepared);
            step("cursor_read", () -> cursorRead(
                "SELECT o.observation_id, o.value_num, v.k FROM clinical.observations o CROSS JOIN ("
                    + valuesList(100) + ") AS v(k) LIMIT 100000"));
            step("types_text", () -> types(TYPE_QUERIES, false));
            step("types_binary", () -> types(TYPE_QUERIES, true));
        } else {
            step("views", () -> {
                Map<String, Object> m = new LinkedHashMap<>();
                for (String v : new String[] {"break_glass_access", "denied_attempts",
                        "access_by_purpose", "daily_activity", "statements", "patient_access",
                        "unusual_access", "shadow_differences"}) {
                    try (Statement st = conn.createStatement();
                         ResultSet rs = st.executeQuery("SELECT count(*) FROM audit." + v)) {
                        rs.next();
                        m.put(v, rs.getLong(1));
                    }
                }
                return m;
            });
            step("cursor_read", () -> cursorRead(
                "SELECT a.k * 10000 + b.k * 100 + c.k AS n FROM (" + valuesList(100) + ") AS a(k) CROSS JOIN ("
                    + valuesList(100) + ") AS b(k) CROSS JOIN (" + valuesList(10) + ") AS c(k) LIMIT 100000"));
            step("types_text", () -> types(AUDIT_TYPE_QUERIES, false));
            step("types_binary", () -> types(AUDIT_TYPE_QUERIES, true));
        }

        conn.close();
        System.out.println(toJson(out));
    }

    static String valuesList(int n) {
        StringBuilder sb = new StringBuilder("VALUES ");
        for (int i = 0; i < n; i++) {
            sb.append(i == 0 ? "" : ", ").append('(').append(i).append(')');
        }
        return sb.toString();
    }

    /**
     * The same parameterised query 10 times: pgJDBC switches to a named
     * server-side statement at the 5th execution (prepareThreshold=5).
     */
    static Object prepared() throws Exception {
        long id;
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery(
                 "SELECT patient_id FROM clinical.patients ORDER BY patient_id LIMIT 1 OFFSET 3")) {
            if (!rs.next()) {
                throw new IllegalStateException("no patient visible to pick an id from");
            }
            id = rs.getLong(1);
        }
        List<Object> answers = new ArrayList<>();
        boolean serverPrepared;
        try (PreparedStatement ps = conn.prepareStatement(
                "SELECT patient_id, site_id, birth_date, deceased FROM clinical.patients WHERE patient_id = ?")) {
            for (int i = 0; i < 10; i++) {
                ps.setLong(1, id);
                StringBuilder rows = new StringBuilder();
                int n = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        n++;
                        rows.append(rs.getLong(1)).append('|').append(rs.getString(2)).append('|')
                            .append(rs.getString(3)).append('|').append(rs.getString(4)).append(';');
                    }
                }
                answers.add(n + ":" + rows);
            }
            serverPrepared = ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare();
        }
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", id);
        m.put("answers", answers);
        m.put("server_prepared", serverPrepared);
        return m;
    }

    /** Cursor mode: no autocommit + a fetch size = a portal read 1000 rows per Execute. */
    static Object cursorRead(String sql) throws Exception {
        conn.setAutoCommit(false);
        long rows = 0;
        try (Statement st = conn.createStatement()) {
            st.setFetchSize(1000);
            try (ResultSet rs = st.executeQuery(sql)) {
                while (rs.next()) {
                    rs.getLong(1);
                    rows++;
                }
            }
        }
        conn.commit();
        conn.setAutoCommit(true);
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("rows", rows);
        m.put("fetch_size", 1000);
        return m;
    }

    /** Each type read with getObject; binary forces pgJDBC's binary transfer. */
    static Object types(String[][] queries, boolean binary) throws Exception {
        Map<String, Object> m = new LinkedHashMap<>();
        for (String[] q : queries) {
            Map<String, Object> r = new LinkedHashMap<>();
            try (PreparedStatement ps = conn.prepareStatement(q[1])) {
                if (binary) {
                    // A negative threshold: server-prepared from the first
                    // execution, results requested in binary format.
                    ps.unwrap(org.postgresql.PGStatement.class).setPrepareThreshold(-1);
                } else {
                    // Never server-prepared: unnamed statement, text results.
                    ps.unwrap(org.postgresql.PGStatement.class).setPrepareThreshold(0);
                }
                try (ResultSet rs = ps.executeQuery()) {
                    ResultSetMetaData rmd = rs.getMetaData();
                    r.put("column_type", rmd.getColumnTypeName(1));
                    r.put("column_class", rmd.getColumnClassName(1));
                    if (rs.next()) {
                        Object v = rs.getObject(1);
                        r.put("class", v == null ? null : v.getClass().getName());
                        r.put("value", v == null ? null : v.toString());
                    } else {
                        r.put("class", null);
                        r.put("value", null);
                    }
                }
            } catch (SQLException e) {
                Map<String, Object> err = new LinkedHashMap<>();
                err.put("sqlstate", e.getSQLState());
                err.put("message", e.getMessage());
                r.put("error", err);
            }
            m.put(q[0], r);
        }
        return m;
    }

    // ---- a small JSON writer (no dependency besides pgJDBC) ----

    static String toJson(Object v) {
        StringBuilder sb = new StringBuilder();
        write(sb, v);
        return sb.toString();
    }

    @SuppressWarnings("unchecked")
    static void write(StringBuilder sb, Object v) {
        if (v == null) {
            sb.append("null");
        } else if (v instanceof Map) {
            sb.append('{');
            Iterator<Map.Entry<String, Object>> it = ((Map<String, Object>) v).entrySet().iterator();
            while (it.hasNext()) {
                Map.Entry<String, Object> e = it.next();
                writeString(sb, e.getKey());
                sb.append(':');
                write(sb, e.getValue());
                if (it.hasNext()) {
                    sb.append(',');
                }
            }
            sb.append('}');
        } else if (v instanceof List) {
            sb.append('[');
            List<Object> l = (List<Object>) v;
            for (int i = 0; i < l.size(); i++) {
                if (i > 0) {
                    sb.append(',');
                }
                write(sb, l.get(i));
            }
            sb.append(']');
        } else if (v instanceof Boolean || v instanceof Integer || v instanceof Long) {
            sb.append(v);
        } else {
            writeString(sb, v.toString());
        }
    }

    static void writeString(StringBuilder sb, String s) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
            }
        }
        sb.append('"');
    }
}
