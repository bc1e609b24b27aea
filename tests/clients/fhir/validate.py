"""Validate lakeward's FHIR AuditEvent export (`lakeward audit export --format fhir`).

Usage: python3 validate.py EXPORT.ndjson

Each line must be one AuditEvent that
  * parses with the FHIR R4B AuditEvent model of `fhir.resources` (pinned in
    requirements.txt; fhir.resources 8 has no R4 package and AuditEvent is
    the same in R4 and R4B), and passes the R4 rules that model leaves out
    (code values of action, outcome, network type, OperationOutcome
    severity and issue type; invariant sev-1; dom-3: every contained
    resource is referenced);
  * follows the rules of src/audit/fhir.rs (IHE BALP): a known profile,
    the BALP Query / PatientQuery slices on events that claim them (and
    only on successful statements), at most one patient entity per event
    and each patient at most once per statement, a disclosure class per
    patient, purposes of use from HL7 v3 ActReason (TREAT, HPAYMT, HOPERAT,
    HRESCH, ETREAT with its justification), the query as the base64 of a
    literal-free fingerprint, a referenced OperationOutcome on failures,
    `recorded` in UTC to the microsecond, ids unique in the file.

Prints "N AuditEvent resources valid" and exits 0; on the first invalid
line, prints "line L: <error>" on stderr and exits 1 (2 for a usage error
or a missing package).
"""

import base64
import binascii
import json
import re
import sys

try:
    from fhir.resources.R4B.auditevent import AuditEvent
except ImportError as e:  # pragma: no cover - environment problem
    print(
        f"fhir.resources is missing ({e}): "
        "python3 -m pip install -r tests/clients/fhir/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(2)

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"
PATIENT_QUERY = BALP + "IHE.BasicAudit.PatientQuery"
QUERY = BALP + "IHE.BasicAudit.Query"
BASE = "http://hl7.org/fhir/StructureDefinition/AuditEvent"
PROFILES = {PATIENT_QUERY, QUERY, BASE}

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
AUDIT_EVENT_ID = "https://lakeward.dev/fhir/NamingSystem/audit-event-id"

PURPOSES = {"TREAT", "HPAYMT", "HOPERAT", "HRESCH", "ETREAT"}
SEARCHES = {"search", "search-type", "search-system"}
DISCLOSURES = {"returned", "aggregated"}
ACTIONS = {"C", "R", "U", "D", "E"}
OUTCOMES = {"0", "4", "8", "12"}
NETWORK_TYPES = {"1", "2", "3", "4", "5"}
SEVERITIES = {"fatal", "error", "warning", "information"}
ISSUE_TYPES = {
    "invalid", "structure", "required", "value", "invariant", "security",
    "login", "unknown", "expired", "forbidden", "suppressed", "processing",
    "not-supported", "duplicate", "multiple-matches", "not-found", "deleted",
    "too-long", "code-invalid", "extension", "too-costly", "business-rule",
    "conflict", "transient", "lock-error", "no-store", "exception", "timeout",
    "incomplete", "throttled", "informational",
}

ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
PATIENT_REF = re.compile(r"^Patient/[A-Za-z0-9\-.]{1,64}$")
RECORDED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
OUTCOME_DESC = re.compile(r"^(SQLSTATE [0-9A-Z]{5}|denied|error)$")


class Invalid(Exception):
    pass


def is_coding(c, system, code):
    return isinstance(c, dict) and c.get("system") == system and c.get("code") == code


def concept_has(cc, system, code):
    return isinstance(cc, dict) and any(is_coding(c, system, code) for c in cc.get("coding", []))


def details(entity, kind):
    return [d.get("valueString") for d in entity.get("detail", []) if d.get("type") == kind]


def references(node, out):
    """Every Reference.reference outside `contained`."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "contained":
                continue
            if k == "reference" and isinstance(v, str):
                out.add(v)
            else:
                references(v, out)
    elif isinstance(node, list):
        for v in node:
            references(v, out)
    return out


def fhir_text(s):
    """The exporter's FHIR string: controls other than tab/CR/LF replaced."""
    return "".join("\ufffd" if ord(c) < 32 and c not in "\t\r\n" else c for c in s)


def check_core(ev):
    if not isinstance(ev, dict) or ev.get("resourceType") != "AuditEvent":
        raise Invalid("not an AuditEvent resource")
    try:
        AuditEvent.model_validate(ev)
    except Exception as e:  # pydantic.ValidationError and friends
        lines = str(e).splitlines()
        raise Invalid("fhir.resources: " + " | ".join(lines[:4])) from None
    if not ID.match(ev.get("id", "")):
        raise Invalid(f"id {ev.get('id')!r} is not a FHIR id")
    if ev.get("action") not in ACTIONS:
        raise Invalid(f"action {ev.get('action')!r} is not C, R, U, D or E")
    if ev.get("outcome") not in OUTCOMES:
        raise Invalid(f"outcome {ev.get('outcome')!r} is not 0, 4, 8 or 12")
    agents = ev["agent"]
    if not agents:
        raise Invalid("no agent")
    for a in agents:
        net = a.get("network")
        if net is not None and net.get("type") not in NETWORK_TYPES:
            raise Invalid(f"agent network type {net.get('type')!r} is not 1-5")
    for e in ev.get("entity", []):
        if "name" in e and "query" in e:
            raise Invalid("sev-1: an entity has both name and query")
    refs = references(ev, set())
    for res in ev.get("contained", []):
        if f"#{res.get('id')}" not in refs:
            raise Invalid(f"dom-3: contained resource {res.get('id')!r} is not referenced")
        if res.get("resourceType") == "OperationOutcome":
            for issue in res["issue"]:
                if issue.get("severity") not in SEVERITIES:
                    raise Invalid(f"OperationOutcome severity {issue.get('severity')!r}")
                if issue.get("code") not in ISSUE_TYPES:
                    raise Invalid(f"OperationOutcome issue code {issue.get('code')!r}")


def check_purposes(concepts, where):
    for cc in concepts:
        codings = cc.get("coding", [])
        for c in codings:
            if c.get("system") != ACT_REASON or c.get("code") not in PURPOSES:
                raise Invalid(
                    f"{where}: {c.get('system')}#{c.get('code')} is not a lakeward "
                    f"purpose of use ({', '.join(sorted(PURPOSES))})"
                )
        if any(c.get("code") == "ETREAT" for c in codings) and not cc.get("text", "").strip():
            raise Invalid(f"{where}: ETREAT (break-glass) without its justification text")


def check_balp_query(ev, patient, query, profile):
    """The slices of BALP IHE.BasicAudit.Query (and PatientQuery)."""
    name = profile.rsplit("/", 1)[1]
    if not is_coding(ev["type"], AUDIT_EVENT_TYPE, "rest"):
        raise Invalid(f"{name}: type must be audit-event-type#rest")
    searches = [
        s for s in ev.get("subtype", [])
        if s.get("system") == RESTFUL_INTERACTION and s.get("code") in SEARCHES
    ]
    if len(searches) != 1:
        raise Invalid(f"{name}: subtype needs exactly one search interaction")
    if ev["action"] != "E":
        raise Invalid(f"{name}: action must be E")
    if ev["outcome"] != "0":
        raise Invalid(f"{name}: outcome must be 0 (BALP records failures differently)")
    for code, role in (("110153", "client"), ("110152", "server")):
        slice_ = [a for a in ev["agent"] if concept_has(a.get("type"), DCM, code)]
        if len(slice_) != 1:
            raise Invalid(f"{name}: needs exactly one {role} agent (DCM {code})")
        if "who" not in slice_[0] or "network" not in slice_[0]:
            raise Invalid(f"{name}: the {role} agent needs who and network")
    users = [a for a in ev["agent"] if concept_has(a.get("type"), PARTICIPATION_TYPE, "IRCP")]
    if len(users) > 1:
        raise Invalid(f"{name}: more than one user agent (IRCP)")
    for u in users:
        if u.get("requestor") is not True or "network" in u:
            raise Invalid(f"{name}: the user agent is the requestor and has no network")
    if len(query) != 1:
        raise Invalid(f"{name}: needs exactly one query entity (System Object)")
    q = query[0]
    if not is_coding(q.get("role"), OBJECT_ROLE, "24") or "query" not in q:
        raise Invalid(f"{name}: the query entity needs role Query (24) and query")
    for forbidden in ("what", "detail", "lifecycle"):
        if forbidden in q:
            raise Invalid(f"{name}: the query entity may not have {forbidden}")
    want = 1 if profile == PATIENT_QUERY else 0
    if len(patient) != want:
        raise Invalid(f"{name}: needs {want} patient entities, has {len(patient)}")


def check_lakeward(ev, seen_patients, line):
    meta = ev.get("meta") or {}
    profiles = meta.get("profile") or []
    if not profiles:
        raise Invalid("meta.profile is missing")
    for p in profiles:
        if p not in PROFILES:
            raise Invalid(f"unknown profile {p}")
    if not RECORDED.match(ev["recorded"]):
        raise Invalid(f"recorded {ev['recorded']!r} is not UTC to the microsecond")
    if not any(is_coding(t, SOURCE_TYPE, "4") for t in ev["source"].get("type", [])):
        raise Invalid("source.type must include security-source-type#4 (Application Server)")
    requestors = [a for a in ev["agent"] if a.get("requestor") is True]
    if len(requestors) != 1:
        raise Invalid(f"needs exactly one requestor agent (the user), has {len(requestors)}")
    user = requestors[0]
    who = user.get("who") or {}
    if not (who.get("identifier", {}).get("value") or who.get("display")):
        raise Invalid("the user agent names no user")

    # Purposes of use.
    check_purposes(ev.get("purposeOfEvent", []), "purposeOfEvent")
    for a in ev["agent"]:
        check_purposes(a.get("purposeOfUse", []), "agent.purposeOfUse")
    if user.get("purposeOfUse", []) != ev.get("purposeOfEvent", []):
        raise Invalid("the user's purposeOfUse differs from purposeOfEvent")

    entities = ev.get("entity", [])
    patient = [e for e in entities if is_coding(e.get("type"), ENTITY_TYPE, "1")]
    query = [e for e in entities if is_coding(e.get("type"), ENTITY_TYPE, "2")]
    record = [e for e in entities if is_coding(e.get("type"), ENTITY_TYPE, "4")]

    # Patients: one entity per event, once per statement, with a class.
    if len(patient) > 1:
        raise Invalid(f"{len(patient)} patient entities: BALP wants one event per patient")
    for p in patient:
        ref = (p.get("what") or {}).get("reference", "")
        if not PATIENT_REF.match(ref):
            raise Invalid(f"patient entity reference {ref!r} is not Patient/<id>")
        if not is_coding(p.get("role"), OBJECT_ROLE, "1"):
            raise Invalid("patient entity role must be object-role#1 (Patient)")
        classes = details(p, "disclosure")
        if len(classes) != 1 or classes[0] not in DISCLOSURES:
            raise Invalid(f"patient entity disclosure {classes!r} is not returned or aggregated")

    # The lakeward record: which statement (or connection) this is.
    if len(record) != 1:
        raise Invalid(f"needs exactly one lakeward record entity (type 4), has {len(record)}")
    ident = (record[0].get("what") or {}).get("identifier") or {}
    if ident and ident.get("system") != AUDIT_EVENT_ID:
        raise Invalid(f"the lakeward record identifier system must be {AUDIT_EVENT_ID}")
    statement = ident.get("value") or ev["id"]
    for p in patient:
        key = (statement, p["what"]["reference"])
        if key in seen_patients:
            raise Invalid(
                f"{key[1]} appears twice for statement {statement} "
                f"(first on line {seen_patients[key]})"
            )
        seen_patients[key] = line

    # The query: the base64 of a literal-free fingerprint.
    for q in query:
        if "query" not in q:
            continue
        try:
            text = base64.b64decode(q["query"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as e:
            raise Invalid(f"query entity: not base64 of UTF-8 text ({e})") from None
        if "'" in text:
            raise Invalid("query entity: the query holds a string literal (a data value)")
        if "description" in q and q["description"] != fhir_text(text):
            raise Invalid("query entity: description differs from the decoded query")

    # Failures: outcomeDesc, a referenced OperationOutcome, no BALP claim.
    outcome = ev["outcome"]
    if outcome == "0":
        if "outcomeDesc" in ev:
            raise Invalid("a success has no outcomeDesc")
    else:
        desc = ev.get("outcomeDesc", "")
        if not OUTCOME_DESC.match(desc):
            raise Invalid(f"outcomeDesc {desc!r} is not 'SQLSTATE <code>'")
        oo = [
            r for r in ev.get("contained", [])
            if r.get("resourceType") == "OperationOutcome" and r.get("id") == "outcome"
        ]
        if len(oo) != 1:
            raise Invalid("a failure needs the contained OperationOutcome 'outcome'")
        if oo[0]["issue"][0].get("details", {}).get("text") != desc:
            raise Invalid("the OperationOutcome does not name the same SQLSTATE")
        want = "forbidden" if outcome == "4" else "exception"
        if oo[0]["issue"][0].get("code") != want:
            raise Invalid(f"outcome {outcome} needs OperationOutcome code {want}")
        linked = [
            e for e in entities
            if is_coding(e.get("type"), RESOURCE_TYPES, "OperationOutcome")
            and (e.get("what") or {}).get("reference") == "#outcome"
        ]
        if len(linked) != 1:
            raise Invalid("no entity references the OperationOutcome")
        if PATIENT_QUERY in profiles or QUERY in profiles:
            raise Invalid("a failure may not claim a BALP query profile (outcome is fixed to 0)")

    # Profiles and event kinds.
    for profile in (PATIENT_QUERY, QUERY):
        if profile in profiles:
            check_balp_query(ev, patient, query, profile)
    if is_coding(ev["type"], DCM, "110114"):
        if not any(is_coding(s, DCM, "110122") for s in ev.get("subtype", [])):
            raise Invalid("a login event (DCM 110114) needs subtype DCM 110122 (Login)")
        if patient or query:
            raise Invalid("a login event has no patient or query entity")
    elif not is_coding(ev["type"], AUDIT_EVENT_TYPE, "rest"):
        raise Invalid("type must be audit-event-type#rest or DCM 110114")


def main(argv):
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    ids = {}
    seen_patients = {}
    count = 0
    with open(argv[1], encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            ev = None
            try:
                if not line.strip():
                    raise Invalid("empty line")
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError as e:
                    raise Invalid(f"not JSON: {e}") from None
                check_core(ev)
                if ev["id"] in ids:
                    raise Invalid(f"id {ev['id']} already on line {ids[ev['id']]}")
                ids[ev["id"]] = line_no
                check_lakeward(ev, seen_patients, line_no)
            except Invalid as e:
                ident = ev.get("id") if isinstance(ev, dict) else None
                suffix = f" (AuditEvent {ident})" if ident else ""
                print(f"line {line_no}: {e}{suffix}", file=sys.stderr)
                return 1
            count += 1
    print(f"{count} AuditEvent resources valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
