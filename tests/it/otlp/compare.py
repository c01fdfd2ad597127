"""Checks that what Weir forwarded equals what the SDK sent.

Usage: compare.py OUT_DIR TIMEOUT_SECS TAG[,TAG...] LABEL [LABEL ...]

OUT_DIR/reference.jsonl holds the SDK's own exports (see send.py); OUT_DIR/LABEL.jsonl what
arrived through Weir. Every span, log record and metric data point of the given runs must be
present in each LABEL with the same ids, names, kinds, timestamps, attributes, events, links,
status, bodies, severities, values, resource and scope. Not compared (Weir's event model does
not carry them): span and link `flags`, metric `startTimeUnixNano`, histogram `min`/`max`,
exemplars, `description`/`unit`, scope attributes, schema URLs, dropped counts; metric
resource attributes are compared as strings (metric tags are strings).
Retries until equal or TIMEOUT_SECS pass; prints the differences and exits 1 otherwise.
"""
import json
import os
import sys
import time


def norm_value(v):
    if "kvlistValue" in v:
        return {"kvlist": sorted((kv["key"], norm_value(kv.get("value", {}))) for kv in v["kvlistValue"].get("values", []))}
    if "arrayValue" in v:
        return {"array": [norm_value(x) for x in v["arrayValue"].get("values", [])]}
    return v


def attrs(kvs, stringify=False):
    out = {}
    for kv in kvs or []:
        val = norm_value(kv.get("value", {}))
        if stringify:
            val = str(next(iter(val.values()))).lower() if "boolValue" in val else str(next(iter(val.values())))
        out[kv["key"]] = val
    return out


def load(path, tags):
    spans, logs, points = {}, {}, {}
    if not os.path.exists(path):
        return spans, logs, points
    with open(path) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    for line in lines:
        req = line["request"]
        for rs in req.get("resourceSpans", []):
            res = attrs(rs.get("resource", {}).get("attributes"))
            if res.get("run", {}).get("stringValue") not in tags:
                continue
            for ss in rs.get("scopeSpans", []):
                scope = {k: ss.get("scope", {}).get(k, "") for k in ("name", "version")}
                for s in ss.get("spans", []):
                    s = dict(s)
                    s.pop("flags", None)
                    s.pop("droppedAttributesCount", None)
                    s["attributes"] = attrs(s.get("attributes"))
                    for e in s.get("events", []):
                        e["attributes"] = attrs(e.get("attributes"))
                    for l in s.get("links", []):
                        l.pop("flags", None)
                        l["attributes"] = attrs(l.get("attributes"))
                    if s.get("status") == {}:
                        s.pop("status")
                    spans[(s["traceId"], s["spanId"])] = {"resource": res, "scope": scope, "span": s}
        for rl in req.get("resourceLogs", []):
            res = attrs(rl.get("resource", {}).get("attributes"))
            if res.get("run", {}).get("stringValue") not in tags:
                continue
            for sl in rl.get("scopeLogs", []):
                scope = {k: sl.get("scope", {}).get(k, "") for k in ("name", "version")}
                for r in sl.get("logRecords", []):
                    r = dict(r)
                    r["attributes"] = attrs(r.get("attributes"))
                    key = (res["run"]["stringValue"], json.dumps(r.get("body")), r.get("timeUnixNano"))
                    logs[key] = {"resource": res, "scope": scope, "record": r}
        for rm in req.get("resourceMetrics", []):
            res = attrs(rm.get("resource", {}).get("attributes"), stringify=True)
            if res.get("run") not in tags:
                continue
            for sm in rm.get("scopeMetrics", []):
                scope = {k: sm.get("scope", {}).get(k, "") for k in ("name", "version")}
                for m in sm.get("metrics", []):
                    for kind in ("gauge", "sum", "histogram", "summary"):
                        if kind not in m:
                            continue
                        d = m[kind]
                        for p in d.get("dataPoints", []):
                            rec = {"resource": res, "scope": scope, "kind": kind,
                                   "temporality": d.get("aggregationTemporality"),
                                   "monotonic": d.get("isMonotonic", False)}
                            if "asInt" in p or "asDouble" in p:
                                rec["value"] = float(p.get("asInt", p.get("asDouble")))
                            for f in ("count", "sum", "bucketCounts", "explicitBounds", "quantileValues"):
                                if f in p:
                                    rec[f] = p[f]
                            key = (m["name"], json.dumps(sorted(attrs(p.get("attributes")).items())), p.get("timeUnixNano"))
                            points[key] = rec
    return spans, logs, points


def main():
    out, timeout, tags, labels = sys.argv[1], float(sys.argv[2]), set(sys.argv[3].split(",")), sys.argv[4:]
    deadline = time.time() + timeout
    while True:
        ref = load(os.path.join(out, "reference.jsonl"), tags)
        problems = []
        if not all(ref):
            problems.append("the reference receiver has not got spans, logs and metrics yet: %s" % [len(x) for x in ref])
        for label in labels:
            got = load(os.path.join(out, label + ".jsonl"), tags)
            for name, r, g in zip(("span", "log", "metric point"), ref, got):
                for k, v in r.items():
                    if k not in g:
                        problems.append("%s: missing %s %s" % (label, name, k))
                    elif g[k] != v:
                        problems.append("%s: %s %s differs:\n  sent:      %s\n  forwarded: %s" % (label, name, k, v, g[k]))
                for k in g:
                    if k not in r:
                        problems.append("%s: unexpected %s %s: %s" % (label, name, k, g[k]))
        if not problems:
            print("ok: %d spans, %d logs, %d metric points, in %s" % (len(ref[0]), len(ref[1]), len(ref[2]), labels))
            return 0
        if time.time() > deadline:
            print("\n".join(problems))
            return 1
        time.sleep(0.3)


if __name__ == "__main__":
    sys.exit(main())
