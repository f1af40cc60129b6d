#!/usr/bin/env python3
"""Compares `tls-inspect ips replay` with Suricata on OISF/suricata-verify's cases.

For every case whose checked alerts come from http, http1, http2, tls or tcp rules (and every
tests/http*, tests/tls* case with alert checks), this replays the case's pcap with its
test.rules (`--level strict`: every rule active) and compares the sids we alert with the
`event_type: alert` checks of its test.yaml:

- same sids: every sid a check expects (count > 0) alerts and no other sid does, and every sid
  a check expects not to alert (count 0) does not;
- same counts: besides, each check's count equals our number of alerts for that sid (checks are
  compared on their sid only; other match fields are not looked at).

A case is not applicable when a rule a check names is refused by our parser or engine (the
keyword is counted), when its pcap is pcapng, or when it has IPv6 traffic only (we skip IPv6).
Cases for older Suricata versions only (`lt-version`, `version`) and cases without a pcap are
left out.

    python3 tls-inspect-dataplane/tests/scripts/suricata_verify.py \\
        --repo /work/.mirror/OISF+suricata-verify/repo --bin target/debug/tls-inspect

`--vendor DIR CASE...` copies cases (pcap, rules, expected sids) into DIR for the committed test
(tests/replay.rs).
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

PROTOS = {"http", "http1", "http2", "tls", "tcp"}


def git(repo, *args):
    return subprocess.run(["git", "--git-dir", repo, *args], check=True, capture_output=True).stdout


def show(repo, commit, path):
    try:
        return git(repo, "show", f"{commit}:{os.path.normpath(path)}")
    except subprocess.CalledProcessError:
        return None


def rule_lines(text):
    """(line number, sid, protocol) of each rule line."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        sid = re.search(r"[;(\s]sid\s*:\s*(\d+)", s)
        words = s.split()
        proto = words[1] if len(words) > 1 else ""
        out.append((n, int(sid.group(1)) if sid else None, proto))
    return out


def version_ok(req):
    """Requirements as the newest Suricata meets them."""
    if not isinstance(req, dict):
        return True
    return "lt-version" not in req and "version" not in req


def alert_checks(test):
    """[(sid or None, count)] of the case's alert filters that apply to the newest Suricata."""
    out = []
    for check in test.get("checks") or []:
        f = check.get("filter") if isinstance(check, dict) else None
        if not f or not version_ok(f.get("requires")) or f.get("filename"):
            continue
        m = f.get("match") or {}
        if m.get("event_type") != "alert":
            continue
        out.append((m.get("alert.signature_id"), f.get("count", 1)))
    return out


def case_files(repo, commit, case):
    """The case's test.yaml, pcap bytes and rules text, or the reason it has none."""
    base = f"tests/{case}"
    raw = show(repo, commit, f"{base}/test.yaml")
    test = yaml.safe_load(raw) if raw else {}
    test = test or {}
    if not version_ok(test.get("requires")):
        return None, "older Suricata only"
    if (test.get("requires") or {}).get("pcap") is False or ("pcap" in test and not test["pcap"]):
        return None, "no pcap"
    if "command" in test:
        return None, "own command"
    files = [p.decode() for p in git(repo, "ls-tree", "--name-only", commit, base + "/").splitlines()]
    pcap_path = test.get("pcap")
    if pcap_path:
        pcap_path = os.path.join(base, pcap_path)
    else:
        pcaps = [f for f in files if f.endswith(".pcap") or f.endswith(".pcapng")]
        if len(pcaps) != 1:
            return None, "no pcap"
        pcap_path = pcaps[0]
    rules_path = os.path.join(base, test["rules"]) if test.get("rules") else f"{base}/test.rules"
    pcap = show(repo, commit, pcap_path)
    rules = show(repo, commit, rules_path)
    if pcap is None or rules is None:
        return None, "no pcap or rules"
    return (test, pcap, rules.decode(errors="replace")), None


def replay(binary, pcap, rules, workdir):
    p_pcap, p_rules, p_eve = (os.path.join(workdir, n) for n in ("input.pcap", "test.rules", "eve.json"))
    with open(p_pcap, "wb") as f:
        f.write(pcap)
    with open(p_rules, "w") as f:
        f.write(rules)
    env = dict(os.environ, TLS_INSPECT_LOG="error")
    r = subprocess.run([binary, "ips", "replay", "--pcap", p_pcap, "--rules", p_rules, "--level", "strict", "--eve", p_eve],
                       capture_output=True, text=True, env=env, timeout=300)
    sids = collections.Counter()
    if os.path.exists(p_eve):
        with open(p_eve) as f:
            for line in f:
                v = json.loads(line)
                if v.get("event_type") == "alert":
                    sids[v["alert"]["signature_id"]] += 1
    # Refusals: "warning: FILE: line N: KEYWORD: ..." (parser), "warning: sid N: why" (engine).
    by_line, by_sid = {}, {}
    for line in r.stderr.splitlines():
        m = re.match(r"tls-inspect: warning: .*?: line (\d+): ([^:]+): (.*)", line)
        if m:
            by_line[int(m.group(1))] = m.group(2).strip() if "keyword" in m.group(3) else m.group(2).strip() + ": " + m.group(3)
            continue
        m = re.match(r"tls-inspect: warning: sid (\d+): (.*)", line)
        if m:
            by_sid[int(m.group(1))] = m.group(2)
    return r, sids, by_line, by_sid


def evaluate(repo, commit, binary, case, workdir):
    files, why = case_files(repo, commit, case)
    if files is None:
        return {"case": case, "status": "skipped", "why": why}
    test, pcap, rules = files
    checks = alert_checks(test)
    if not any(sid is not None for sid, _ in checks):
        return {"case": case, "status": "skipped", "why": "no alert checks"}
    lines = rule_lines(rules)
    proto_of = {sid: proto for _, sid, proto in lines if sid is not None}
    checked = {sid for sid, _ in checks if sid is not None}
    named = case.startswith("http") or case.startswith("tls")
    if not named and not all(proto_of.get(s) in PROTOS for s in checked):
        return {"case": case, "status": "skipped", "why": "not http/tls/tcp rules"}
    if pcap[:4] == b"\x0a\x0d\x0d\x0a":
        return {"case": case, "status": "n/a", "why": "pcapng"}
    r, ours, by_line, by_sid = replay(binary, pcap, rules, workdir)
    refused = dict(by_sid)
    for n, sid, _ in lines:
        if n in by_line and sid is not None:
            refused[sid] = by_line[n]
    bad = {s: refused[s] for s in checked if s in refused}
    bad.update({s: "protocol " + proto_of[s] for s in checked if s in proto_of and proto_of[s] not in PROTOS and s not in bad})
    missing = [s for s in checked if s not in proto_of]
    if bad:
        return {"case": case, "status": "n/a", "why": "refused: " + "; ".join(sorted(set(bad.values())))}
    if missing:
        return {"case": case, "status": "n/a", "why": f"checked sids not in the rules file: {missing}"}
    if r.returncode != 0:
        return {"case": case, "status": "error", "why": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else str(r.returncode)}
    summary = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    if " 0 flows" in summary and "ipv6" in summary:
        return {"case": case, "status": "n/a", "why": "IPv6 only"}
    expected = {s for s, c in checks if s is not None and c > 0}
    absent = {s for s, c in checks if s is not None and c == 0}
    got = set(ours)
    same_sids = got == expected and not (got & absent)
    same_counts = same_sids and all((ours.get(s, 0) == c) if s is not None else (sum(ours.values()) == c) for s, c in checks)
    return {
        "case": case,
        "status": "same counts" if same_counts else ("same sids" if same_sids else "different"),
        "expected": sorted(expected),
        "ours": dict(sorted(ours.items())),
        "checks": checks,
        "summary": summary,
        "other_refused": len(refused),
    }


def vendor(repo, commit, binary, dest, cases):
    for case in cases:
        files, why = case_files(repo, commit, case)
        if files is None:
            sys.exit(f"{case}: {why}")
        test, pcap, rules = files
        checks = alert_checks(test)
        d = os.path.join(dest, case)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "input.pcap"), "wb") as f:
            f.write(pcap)
        with open(os.path.join(d, "test.rules"), "w") as f:
            f.write(rules)
        expected = sorted({s for s, c in checks if s is not None and c > 0})
        absent = sorted({s for s, c in checks if s is not None and c == 0})
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump({"case": case, "commit": commit, "alert_sids": expected, "no_alert_sids": absent}, f, indent=1)
            f.write("\n")
        print(f"{case}: {len(pcap)} bytes, expects {expected}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default="/work/.mirror/OISF+suricata-verify/repo")
    ap.add_argument("--commit", default="HEAD")
    ap.add_argument("--bin", default="target/debug/tls-inspect")
    ap.add_argument("--only", help="a regex: the cases to look at")
    ap.add_argument("--json", help="write every case's result here")
    ap.add_argument("--vendor", metavar="DIR", help="copy the named cases into DIR")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args()
    commit = git(a.repo, "rev-parse", a.commit).decode().strip()
    if a.vendor:
        return vendor(a.repo, commit, a.bin, a.vendor, a.cases)
    cases = a.cases or sorted(p.decode().split("/")[1] for p in git(a.repo, "ls-tree", "--name-only", commit, "tests/").splitlines())
    if a.only:
        cases = [c for c in cases if re.search(a.only, c)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            res = evaluate(a.repo, commit, a.bin, case, tmp)
            results.append(res)
            if res["status"] != "skipped":
                detail = res.get("why") or f"expected {res['expected']} ours {res['ours']}"
                print(f"{res['status']:12} {case}: {detail}", flush=True)
    status = collections.Counter(r["status"] for r in results)
    applicable = status["same counts"] + status["same sids"] + status["different"] + status["error"]
    same = status["same counts"] + status["same sids"]
    print(f"\nsuricata-verify {commit[:12]}: {applicable + status['n/a']} http/tls/tcp cases with alert checks; "
          f"{status['n/a']} not applicable; of {applicable} applicable, {same} give the same sids "
          f"({status['same counts']} also the same counts), {status['different']} differ, {status['error']} errors")
    reasons = collections.Counter()
    for r in results:
        if r["status"] == "n/a":
            for w in r["why"].removeprefix("refused: ").split("; "):
                reasons[w] += 1
    if reasons:
        print("not applicable because: " + "; ".join(f"{w} ({n})" for w, n in reasons.most_common()))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"commit": commit, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
