# Shared by the bench scripts that start lakeward servers: the
# configuration sections every benchmark server has (listener, the demo
# TLS certificate and token key, the tables, the pseudonymisation key),
# printed to stdout; the caller appends its own `[audit]` section.
#
#   server_toml PORT DATA LW_DATA [POLICY_LINES] [SERVER_LINES]
#
# DATA: the folder bench/run.sh generated (keys, tls); LW_DATA: the tables
# to serve; POLICY_LINES, SERVER_LINES: more keys of the [policy] and
# [server] sections.
server_toml() {
  local port="$1" data="$2" lw_data="$3" policy_lines="${4:-}" server_lines="${5:-}"
  cat <<TOML
[server]
listen = "127.0.0.1:$port"
$server_lines
[tls]
cert_file = "$data/tls/server.crt"
key_file = "$data/tls/server.key"
[data]
root = "$lw_data"
[auth]
issuer = "lakeward-demo"
audience = "lakeward"
public_keys = [{ kid = "demo-es256", alg = "ES256", file = "$data/keys/jwt-public.pem" }]
[policy]
pseudonym_key_file = "$data/keys/pseudonym.key"
$policy_lines
TOML
}
