"""Summarise a coordinator's `distributed stage` log lines (JSON log format,
`[cluster] stage_metrics = true`) read from stdin, over RUNS executions of
one statement: a JSON list with one object per stage number (1: the stages
over the scans), giving its tasks and the mean per execution of its
operators' CPU time (summed over its tasks; a policy barrier's includes its
scan's Parquet decoding), and of the rows and bytes it sent to the next
stage."""
import json
import sys

runs = int(sys.argv[1])
stages = {}
distributed = 0
for line in sys.stdin:
    try:
        event = json.loads(line)
    except ValueError:
        continue
    message = event.get("message")
    if message == "statement distributed":
        distributed += 1
    if message != "distributed stage":
        continue
    s = stages.setdefault(int(event["stage"]), {"tasks": int(event["tasks"]), "cpu_ms": 0.0,
                                                "rows_sent": 0, "bytes_sent": 0, "seen": 0})
    s["cpu_ms"] += float(event["cpu_ms"])
    s["rows_sent"] += int(event["rows_sent"])
    s["bytes_sent"] += int(event["bytes_sent"])
    s["seen"] += 1
out = []
for num in sorted(stages):
    s = stages[num]
    n = s["seen"]
    out.append({"stage": num, "tasks": s["tasks"], "executions": n,
                "cpu_ms": round(s["cpu_ms"] / n, 1), "rows_sent": s["rows_sent"] // n,
                "bytes_sent": s["bytes_sent"] // n})
if distributed and distributed != runs:
    print(f"{distributed} of {runs} executions were distributed", file=sys.stderr)
print(json.dumps(out))
